// Package v1alpha1 contains the API types of the paytoview.md-platform.io
// group: Product, Purchase and Customer.
// +kubebuilder:object:generate=true
// +groupName=paytoview.md-platform.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version used to register these objects.
	GroupVersion = schema.GroupVersion{Group: "paytoview.md-platform.io", Version: "v1alpha1"}

	// SchemeBuilder adds the types of this group-version to a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this group-version to the given scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&Product{}, &ProductList{},
		&Purchase{}, &PurchaseList{},
		&Customer{}, &CustomerList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
