package naming

import (
	"regexp"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

func TestEntityTypeCode_MatchesSeedMetadata(t *testing.T) {
	cases := []struct {
		t    v1alpha1.EntityType
		code int
	}{
		{v1alpha1.EntityTypeVideo, 1},
		{v1alpha1.EntityTypeChannel, 2},
		{v1alpha1.EntityTypeContent, 3},
	}
	for _, c := range cases {
		if got := EntityTypeCode(c.t); got != c.code {
			t.Errorf("EntityTypeCode(%s) = %d, want %d", c.t, got, c.code)
		}
		back, ok := EntityTypeFromCode(c.code)
		if !ok || back != c.t {
			t.Errorf("EntityTypeFromCode(%d) = %q, %v; want %q", c.code, back, ok, c.t)
		}
	}
	if got := EntityTypeCode("Podcast"); got != 0 {
		t.Errorf("EntityTypeCode(unknown) = %d, want 0", got)
	}
	for _, code := range []int{-1, 0, 4} {
		if _, ok := EntityTypeFromCode(code); ok {
			t.Errorf("EntityTypeFromCode(%d) accepted an unknown code", code)
		}
	}
}

func TestCustomerName_StableValidAndDistinct(t *testing.T) {
	ids := []string{
		"dev-user-1", "auth0|5f7c8ec7c33c6c004bbafe82", "USER@Example.com",
		"a", "a/b:c=d+e~f", string(make([]byte, 255)),
	}
	seen := map[string]string{}
	for _, id := range ids {
		name := CustomerName(id)
		if name != CustomerName(id) {
			t.Fatalf("CustomerName(%q) is not stable", id)
		}
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("CustomerName(%q) = %q is not a DNS label: %v", id, name, errs)
		}
		if prev, dup := seen[name]; dup {
			t.Errorf("CustomerName collides for %q and %q", prev, id)
		}
		seen[name] = id
	}
	// Case matters in user ids, so it must matter in names.
	if CustomerName("Alice") == CustomerName("alice") {
		t.Error("CustomerName folds case")
	}
}

func TestNewPurchaseName_ShapeAndUniqueness(t *testing.T) {
	shape := regexp.MustCompile(`^ptv-[a-z0-9]{10}$`)
	seen := map[string]bool{}
	for range 10000 {
		n := NewPurchaseName()
		if !shape.MatchString(n) {
			t.Fatalf("NewPurchaseName() = %q, want ptv- and 10 lower-case alphanumerics", n)
		}
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Fatalf("%q is not a valid object name: %v", n, errs)
		}
		if seen[n] {
			t.Fatalf("NewPurchaseName() repeated %q within 10000 draws", n)
		}
		seen[n] = true
	}
}

func TestPurchaseLabels_AreValidLabelValues(t *testing.T) {
	labels := PurchaseLabels("auth0|user with spaces", "ent/ID:=+~", "video-7day")
	for k, v := range labels {
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("label %s=%q is invalid: %v", k, v, errs)
		}
	}
	if labels[v1alpha1.LabelProduct] != "video-7day" {
		t.Errorf("product label = %q, want the product name", labels[v1alpha1.LabelProduct])
	}
}
