// Package kube holds small Kubernetes helpers shared by the operator, its
// tools and its tests.
package kube

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

// NewScheme returns a scheme with client-go's types and the paytoview types.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}
