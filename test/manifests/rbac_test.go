package manifests

import (
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const paytoviewGroup = "paytoview.md-platform.io"

// The cluster-wide RBAC objects the installation may create, and why: the
// secure metrics endpoint's TokenReviews/SubjectAccessReviews are
// cluster-scoped APIs, and /metrics is a non-resource URL. Anything else
// would be a grant beyond the operator's namespace.
var (
	allowedClusterRoles        = []string{"paytoview-metrics-auth-role", "paytoview-metrics-reader"}
	allowedClusterRoleBindings = []string{"paytoview-metrics-auth-rolebinding"}
)

func names[T any](items []T, name func(T) string) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, name(it))
	}
	slices.Sort(out)
	return out
}

func TestRBAC_OnlyMetricsAuthIsClusterWide(t *testing.T) {
	for _, r := range renderAll(t).all() {
		t.Run(r.name, func(t *testing.T) {
			crs := names(r.ofKind("ClusterRole"), func(u *unstructured.Unstructured) string { return u.GetName() })
			if !slices.Equal(crs, allowedClusterRoles) {
				t.Errorf("ClusterRoles = %v, want exactly %v", crs, allowedClusterRoles)
			}
			crbs := names(r.ofKind("ClusterRoleBinding"), func(u *unstructured.Unstructured) string { return u.GetName() })
			if !slices.Equal(crbs, allowedClusterRoleBindings) {
				t.Errorf("ClusterRoleBindings = %v, want exactly %v", crbs, allowedClusterRoleBindings)
			}
			for _, u := range r.ofKind("ClusterRoleBinding") {
				b := decode[rbacv1.ClusterRoleBinding](t, u)
				if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != "paytoview-metrics-auth-role" {
					t.Errorf("ClusterRoleBinding %s binds %s %s, want the metrics auth ClusterRole", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
				}
				wantSubject := rbacv1.Subject{Kind: "ServiceAccount", Name: serviceAccount, Namespace: namespace}
				if len(b.Subjects) != 1 || b.Subjects[0] != wantSubject {
					t.Errorf("ClusterRoleBinding %s subjects = %+v, want only %+v", b.Name, b.Subjects, wantSubject)
				}
			}
		})
	}
}

func TestRBAC_NoClusterRoleGrantsSecretsOrPaytoviewObjects(t *testing.T) {
	forbidden := []string{"secrets", "purchases", "products", "customers", "*"}
	for _, r := range renderAll(t).all() {
		for _, u := range r.ofKind("ClusterRole") {
			cr := decode[rbacv1.ClusterRole](t, u)
			if cr.AggregationRule != nil {
				t.Errorf("%s: ClusterRole %s aggregates other roles; its rules could grow without review", r.name, cr.Name)
			}
			for _, rule := range cr.Rules {
				for _, g := range rule.APIGroups {
					if g == paytoviewGroup || g == "*" {
						t.Errorf("%s: ClusterRole %s grants on API group %q", r.name, cr.Name, g)
					}
				}
				for _, res := range rule.Resources {
					base, _, _ := strings.Cut(res, "/")
					if slices.Contains(forbidden, base) {
						t.Errorf("%s: ClusterRole %s grants %v on %q", r.name, cr.Name, rule.Verbs, res)
					}
				}
				if slices.Contains(rule.Verbs, "*") {
					t.Errorf("%s: ClusterRole %s grants every verb on %v", r.name, cr.Name, rule.Resources)
				}
			}
		}
	}
}

// grants reports whether rules allow verb on group/resource.
func grants(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if (slices.Contains(r.APIGroups, group) || slices.Contains(r.APIGroups, "*")) &&
			(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) &&
			(slices.Contains(r.Verbs, verb) || slices.Contains(r.Verbs, "*")) && len(r.ResourceNames) == 0 {
			return true
		}
	}
	return false
}

func TestRBAC_ManagerRoleIsNamespacedAndCoversItsObjects(t *testing.T) {
	r := renderAll(t).dflt
	role := get[rbacv1.Role](t, r, "Role", managerRoleName)
	if role.Namespace != namespace {
		t.Errorf("manager Role namespace = %q, want %q", role.Namespace, namespace)
	}

	// What the contract between the API, the controllers and Stripe
	// requires of the operator's identity, and nothing beyond its own
	// objects, their Secrets and Events.
	required := []struct{ group, resource, verb string }{
		{paytoviewGroup, "products", "get"}, {paytoviewGroup, "products", "list"}, {paytoviewGroup, "products", "watch"},
		{paytoviewGroup, "products/status", "patch"},
		{paytoviewGroup, "purchases", "get"}, {paytoviewGroup, "purchases", "list"}, {paytoviewGroup, "purchases", "watch"},
		{paytoviewGroup, "purchases", "create"}, {paytoviewGroup, "purchases/status", "patch"},
		{paytoviewGroup, "customers", "get"}, {paytoviewGroup, "customers", "list"}, {paytoviewGroup, "customers", "watch"},
		{paytoviewGroup, "customers", "create"}, {paytoviewGroup, "customers/status", "patch"},
		{"", "secrets", "create"}, {"", "secrets", "get"},
	}
	for _, req := range required {
		if !grants(role.Rules, req.group, req.resource, req.verb) {
			t.Errorf("manager Role does not grant %s on %s (group %q)", req.verb, req.resource, req.group)
		}
	}
	if !grants(role.Rules, "", "events", "create") && !grants(role.Rules, "events.k8s.io", "events", "create") {
		t.Errorf("manager Role cannot create Events (core or events.k8s.io)")
	}

	allowed := map[string][]string{
		paytoviewGroup: {"products", "products/status", "products/finalizers", "purchases", "purchases/status",
			"purchases/finalizers", "customers", "customers/status", "customers/finalizers"},
		"":              {"secrets", "events"},
		"events.k8s.io": {"events"},
	}
	for _, rule := range role.Rules {
		if len(rule.NonResourceURLs) > 0 {
			t.Errorf("manager Role has non-resource URLs %v (meaningless in a Role)", rule.NonResourceURLs)
		}
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				if !slices.Contains(allowed[g], res) {
					t.Errorf("manager Role grants %v on %q in group %q, outside the operator's own objects", rule.Verbs, res, g)
				}
			}
		}
		if slices.Contains(rule.Verbs, "*") {
			t.Errorf("manager Role grants every verb on %v", rule.Resources)
		}
	}

	for _, rr := range renderAll(t).all() {
		if u := rr.find("ClusterRole", managerRoleName); u != nil {
			t.Errorf("%s: the manager's rules are also a ClusterRole", rr.name)
		}
		if rr.find("Role", managerRoleName) == nil {
			t.Errorf("%s: no manager Role", rr.name)
		}
	}
}

func TestRBAC_RoleBindingsBindTheManagerServiceAccount(t *testing.T) {
	r := renderAll(t).dflt
	if r.find("ServiceAccount", serviceAccount) == nil {
		t.Fatalf("no ServiceAccount %s", serviceAccount)
	}
	bound := map[string]bool{}
	for _, u := range r.ofKind("RoleBinding") {
		b := decode[rbacv1.RoleBinding](t, u)
		if b.RoleRef.Kind != "Role" {
			t.Errorf("RoleBinding %s refers to a %s, want a Role of this namespace", b.Name, b.RoleRef.Kind)
		}
		if r.find("Role", b.RoleRef.Name) == nil {
			t.Errorf("RoleBinding %s refers to Role %s, which is not installed", b.Name, b.RoleRef.Name)
		}
		for _, s := range b.Subjects {
			if s.Kind == "ServiceAccount" && s.Name == serviceAccount && s.Namespace == namespace {
				bound[b.RoleRef.Name] = true
			}
		}
	}
	for _, want := range []string{managerRoleName, "paytoview-leader-election-role"} {
		if !bound[want] {
			t.Errorf("Role %s is not bound to ServiceAccount %s/%s", want, namespace, serviceAccount)
		}
	}

	le := get[rbacv1.Role](t, r, "Role", "paytoview-leader-election-role")
	for _, verb := range []string{"get", "create", "update"} {
		if !grants(le.Rules, "coordination.k8s.io", "leases", verb) {
			t.Errorf("leader election Role does not grant %s on leases", verb)
		}
	}
	if grants(le.Rules, "", "secrets", "get") || grants(le.Rules, "", "configmaps", "update") {
		t.Errorf("leader election Role grants more than leases and events: %+v", le.Rules)
	}
}

func TestRBAC_HumanRolesStayInTheNamespace(t *testing.T) {
	r := renderAll(t).dflt
	for _, name := range []string{
		"paytoview-product-admin-role", "paytoview-product-editor-role", "paytoview-product-viewer-role",
		"paytoview-purchase-admin-role", "paytoview-purchase-editor-role", "paytoview-purchase-viewer-role",
		"paytoview-customer-viewer-role",
	} {
		role := get[rbacv1.Role](t, r, "Role", name)
		if role.Namespace != namespace {
			t.Errorf("Role %s is in %q, want %q", name, role.Namespace, namespace)
		}
		for _, rule := range role.Rules {
			if !slices.Equal(rule.APIGroups, []string{paytoviewGroup}) {
				t.Errorf("Role %s grants on groups %v, want only %s", name, rule.APIGroups, paytoviewGroup)
			}
		}
	}

	// A Purchase is the record of a payment: support staff request refunds
	// through spec.refund, but neither forge nor erase purchases.
	editor := get[rbacv1.Role](t, r, "Role", "paytoview-purchase-editor-role")
	if !grants(editor.Rules, paytoviewGroup, "purchases", "patch") {
		t.Errorf("purchase editor cannot patch purchases (to request a refund)")
	}
	for _, verb := range []string{"create", "delete", "deletecollection"} {
		if grants(editor.Rules, paytoviewGroup, "purchases", verb) {
			t.Errorf("purchase editor may %s purchases", verb)
		}
	}
	for _, name := range []string{"paytoview-product-viewer-role", "paytoview-purchase-viewer-role", "paytoview-customer-viewer-role"} {
		viewer := get[rbacv1.Role](t, r, "Role", name)
		for _, rule := range viewer.Rules {
			for _, v := range rule.Verbs {
				if !slices.Contains([]string{"get", "list", "watch"}, v) {
					t.Errorf("viewer Role %s grants %q", name, v)
				}
			}
		}
	}
}
