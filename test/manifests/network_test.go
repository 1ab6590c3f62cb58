package manifests

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// portSet lists "port/protocol" of NetworkPolicy ports.
func portSet(ports []networkingv1.NetworkPolicyPort) []string {
	var out []string
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		out = append(out, p.Port.String()+"/"+string(proto))
	}
	return out
}

func TestNetworkPolicy_AdmitsOnlyTheIngressControllerAndMonitoring(t *testing.T) {
	r := renderAll(t).dflt
	d, _ := manager(t, r)
	inbound := map[string]metav1.LabelSelector{} // port -> allowed namespaces
	var outbound []string
	for _, u := range r.ofKind("NetworkPolicy") {
		np := decode[networkingv1.NetworkPolicy](t, u)
		if !selects(t, &np.Spec.PodSelector, d.Spec.Template.Labels) {
			t.Errorf("NetworkPolicy %s does not select the manager's pods", np.Name)
		}
		for _, rule := range np.Spec.Ingress {
			if len(rule.From) != 1 || rule.From[0].NamespaceSelector == nil || rule.From[0].PodSelector != nil || rule.From[0].IPBlock != nil {
				t.Errorf("NetworkPolicy %s admits %+v, want one namespace selector per rule", np.Name, rule.From)
				continue
			}
			if len(rule.From[0].NamespaceSelector.MatchLabels) == 0 && len(rule.From[0].NamespaceSelector.MatchExpressions) == 0 {
				t.Errorf("NetworkPolicy %s admits every namespace", np.Name)
			}
			for _, p := range portSet(rule.Ports) {
				inbound[p] = *rule.From[0].NamespaceSelector
			}
		}
		for _, rule := range np.Spec.Egress {
			outbound = append(outbound, portSet(rule.Ports)...)
		}
	}

	want := map[string]map[string]string{
		"8080/TCP": {"paytoview.md-platform.io/api-access": "true"},
		"8443/TCP": {"metrics": "enabled"},
	}
	if len(inbound) != len(want) {
		t.Errorf("inbound ports %v, want exactly %v", keys(inbound), keys(want))
	}
	for port, labels := range want {
		sel, ok := inbound[port]
		if !ok || !mapsEqual(sel.MatchLabels, labels) {
			t.Errorf("port %s admits namespaces %+v, want those labelled %v", port, sel, labels)
		}
	}
	slices.Sort(outbound)
	if want := []string{"443/TCP", "53/TCP", "53/UDP", "6443/TCP"}; !slices.Equal(outbound, want) {
		t.Errorf("egress ports %v, want %v (DNS, Stripe/IdP over HTTPS, the apiserver)", outbound, want)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestNetworkPolicy_EmulatorOverlayLetsManagerAndEmulatorTalk(t *testing.T) {
	r := renderAll(t).emulator
	d, _ := manager(t, r)
	em := get[appsv1.Deployment](t, r, "Deployment", emulatorName)
	ec := &em.Spec.Template.Spec.Containers[0]
	var in, out bool
	for _, u := range r.ofKind("NetworkPolicy") {
		np := decode[networkingv1.NetworkPolicy](t, u)
		if !selects(t, &np.Spec.PodSelector, d.Spec.Template.Labels) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			for _, peer := range rule.From {
				if peer.PodSelector != nil && selects(t, peer.PodSelector, em.Spec.Template.Labels) &&
					slices.Contains(portSet(rule.Ports), "8080/TCP") {
					in = true
				}
			}
		}
		for _, rule := range np.Spec.Egress {
			for _, peer := range rule.To {
				if peer.PodSelector == nil || !selects(t, peer.PodSelector, em.Spec.Template.Labels) {
					continue
				}
				for _, p := range rule.Ports {
					if p.Port != nil {
						if _, ok := containerPort(ec, *p.Port); ok {
							out = true
						}
					}
				}
			}
		}
	}
	if !in {
		t.Errorf("no NetworkPolicy lets the emulator deliver webhooks to the manager's port 8080")
	}
	if !out {
		t.Errorf("no NetworkPolicy lets the manager reach the emulator's port")
	}
}

func TestIngress_RoutesTheAPIAndTheWebhookToTheAPIService(t *testing.T) {
	r := renderAll(t).production
	ings := r.ofKind("Ingress")
	if len(ings) != 1 {
		t.Fatalf("production overlay renders %d Ingresses, want 1", len(ings))
	}
	ing := decode[networkingv1.Ingress](t, ings[0])
	svc := get[corev1.Service](t, r, "Service", apiServiceName)
	routes := map[string]networkingv1.PathType{}
	for _, rule := range ing.Spec.Rules {
		if rule.Host == "" || rule.Host == "paytoview.example.com" {
			t.Errorf("Ingress host %q: the documented overlay must show how to set the host", rule.Host)
		}
		for _, p := range rule.HTTP.Paths {
			b := p.Backend.Service
			if b == nil || b.Name != svc.Name || b.Port.Name != svc.Spec.Ports[0].Name {
				t.Errorf("path %s goes to %+v, want Service %s port %s", p.Path, b, svc.Name, svc.Spec.Ports[0].Name)
			}
			routes[p.Path] = *p.PathType
		}
	}
	want := map[string]networkingv1.PathType{
		"/client/v1":                 networkingv1.PathTypePrefix,
		"/admin/v1":                  networkingv1.PathTypePrefix,
		"/client/v1/webhooks/stripe": networkingv1.PathTypeExact,
	}
	if !mapsEqual(stringify(routes), stringify(want)) {
		t.Errorf("Ingress routes %v, want %v", routes, want)
	}
	for _, tls := range ing.Spec.TLS {
		for _, h := range tls.Hosts {
			if h != ing.Spec.Rules[0].Host {
				t.Errorf("TLS host %q differs from the rule's host %q", h, ing.Spec.Rules[0].Host)
			}
		}
	}
}

func stringify(m map[string]networkingv1.PathType) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func TestServiceMonitor_ScrapesOnlyTheMetricsService(t *testing.T) {
	r := renderAll(t).production
	mons := r.ofKind("ServiceMonitor")
	if len(mons) != 1 {
		t.Fatalf("production overlay renders %d ServiceMonitors, want 1", len(mons))
	}
	mon := mons[0]
	sel, _, _ := unstructured.NestedStringMap(mon.Object, "spec", "selector", "matchLabels")
	metrics := get[corev1.Service](t, r, "Service", metricsService)
	api := get[corev1.Service](t, r, "Service", apiServiceName)
	if !selects(t, &metav1.LabelSelector{MatchLabels: sel}, metrics.Labels) {
		t.Errorf("ServiceMonitor selector %v does not select Service %s %v", sel, metrics.Name, metrics.Labels)
	}
	if selects(t, &metav1.LabelSelector{MatchLabels: sel}, api.Labels) {
		t.Errorf("ServiceMonitor selector %v also selects the API Service", sel)
	}
	endpoints, _, _ := unstructured.NestedSlice(mon.Object, "spec", "endpoints")
	if len(endpoints) != 1 {
		t.Fatalf("ServiceMonitor has %d endpoints, want 1", len(endpoints))
	}
	ep, _ := endpoints[0].(map[string]any)
	if ep["port"] != metrics.Spec.Ports[0].Name || ep["scheme"] != "https" || ep["path"] != "/metrics" {
		t.Errorf("ServiceMonitor endpoint %v, want https /metrics on port %s", ep, metrics.Spec.Ports[0].Name)
	}
}
