package manifests

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

const fieldOwner = client.FieldOwner("paytoview-manifests-test")

// Kinds a rendering may contain that a bare apiserver does not serve:
// their CRDs come with the Prometheus Operator.
var externalGroups = []string{"monitoring.coreos.com"}

// createForReal creates the objects a dry run of the rest depends on: the
// Namespace (for namespaced objects and its Pod Security labels) and the
// ServiceAccount (pods naming it are rejected without it).
func createForReal(ctx context.Context, t *testing.T, r rendering) {
	t.Helper()
	for _, kind := range []string{"Namespace", "ServiceAccount"} {
		for _, u := range r.ofKind(kind) {
			err := env.Client.Create(ctx, u.DeepCopy())
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("%s: creating %s %s: %v", r.name, kind, u.GetName(), err)
			}
		}
	}
}

// Server-side dry-run apply of every object proves the apiserver of the
// Kubernetes version we target (testenv.KubernetesVersion) accepts them:
// schema, defaulting, validation and admission, without persisting them.
func TestManifests_ApiserverAcceptsEveryObject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, r := range renderAll(t).all() {
		t.Run(r.name, func(t *testing.T) {
			createForReal(ctx, t, r)
			for _, u := range r.objs {
				gvk := u.GroupVersionKind()
				if _, err := env.Client.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
					if meta.IsNoMatchError(err) && slices.Contains(externalGroups, gvk.Group) {
						continue
					}
					t.Errorf("%s %s: the apiserver does not serve %s: %v", u.GetKind(), u.GetName(), gvk, err)
					continue
				}
				err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()),
					fieldOwner, client.ForceOwnership, client.DryRunAll)
				if err != nil {
					t.Errorf("%s %s/%s rejected: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
				}
			}
		})
	}
}

// podFor makes the Pod a Deployment would create.
func podFor(d *appsv1.Deployment) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: d.Name + "-",
			Namespace:    d.Namespace,
			Labels:       d.Spec.Template.Labels,
			Annotations:  d.Spec.Template.Annotations,
		},
		Spec: *d.Spec.Template.Spec.DeepCopy(),
	}
}

// The namespace enforces the "restricted" Pod Security Standard; the pods
// of every Deployment must be admitted under it. A pod without the
// restrictions is rejected, so the check is live, not vacuous.
func TestManifests_PodsAreAdmittedUnderRestrictedPodSecurity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, r := range []rendering{renderAll(t).emulator} {
		createForReal(ctx, t, r)
		for _, u := range r.ofKind("Deployment") {
			d := decode[appsv1.Deployment](t, u)
			if err := env.Client.Create(ctx, podFor(d), client.DryRunAll); err != nil {
				t.Errorf("%s: a pod of Deployment %s is rejected: %v", r.name, d.Name, err)
			}

			loose := podFor(d)
			loose.Spec.SecurityContext = nil
			for i := range loose.Spec.Containers {
				loose.Spec.Containers[i].SecurityContext = nil
			}
			err := env.Client.Create(ctx, loose, client.DryRunAll)
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "restricted") {
				t.Errorf("%s: a pod of %s without its security context was not refused by Pod Security admission: %v", r.name, d.Name, err)
			}
		}
	}
}

// Every rule of every Role names resources the apiserver serves, and all of
// them namespaced: a Role's grant on a cluster-scoped resource would be
// dead, a sign that the operator expects cluster-wide access it lacks.
func TestManifests_RolesGrantOnlyNamespacedResources(t *testing.T) {
	r := renderAll(t).dflt
	mapper := env.Client.RESTMapper()
	for _, u := range r.ofKind("Role") {
		role := decode[rbacv1.Role](t, u)
		for _, rule := range role.Rules {
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					base, _, _ := strings.Cut(res, "/")
					gvk, err := mapper.KindFor(schema.GroupVersionResource{Group: g, Resource: base})
					if err != nil {
						t.Errorf("Role %s: %s in group %q: not served by the apiserver: %v", role.Name, res, g, err)
						continue
					}
					m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
					if err != nil {
						t.Errorf("Role %s: %s: %v", role.Name, gvk, err)
						continue
					}
					if m.Scope.Name() != meta.RESTScopeNameNamespace {
						t.Errorf("Role %s grants %v on cluster-scoped %s", role.Name, rule.Verbs, res)
					}
				}
			}
		}
	}
}
