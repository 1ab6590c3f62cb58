// Command kubectl-paytoview is a kubectl plugin for support staff and
// operators: list a user's purchases, tell one purchase's story, request a
// refund, send a correctly signed test webhook to an endpoint, and back up
// and restore Products, Customers and Purchases with their status.
//
//	kubectl paytoview purchases --user USER [--entity ENTITY]
//	kubectl paytoview describe PURCHASE
//	kubectl paytoview refund PURCHASE --reason TEXT [--by NAME]
//	kubectl paytoview send-webhook --url URL --secret whsec_... (--file EVENT.json | --purchase PURCHASE --type EVENT_TYPE)
//	kubectl paytoview backup > backup.yaml
//	kubectl paytoview restore -f backup.yaml
package main

import (
	"context"
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/internal/kube"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, connect); err != nil {
		fmt.Fprintln(os.Stderr, "kubectl-paytoview:", err)
		os.Exit(1)
	}
}

// connect builds a client and the default namespace from the usual kubeconfig
// rules (KUBECONFIG, ~/.kube/config, in-cluster), like kubectl itself.
func connect(namespace string) (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	overrides := &clientcmd.ConfigOverrides{}
	if namespace != "" {
		overrides.Context.Namespace = namespace
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("resolving namespace: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: kube.NewScheme()})
	if err != nil {
		return nil, "", fmt.Errorf("creating client: %w", err)
	}
	return c, ns, nil
}

type connectFunc func(namespace string) (client.Client, string, error)
