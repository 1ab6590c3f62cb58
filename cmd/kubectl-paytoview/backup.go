package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

// backupKinds are saved and restored in this order: Purchases name their
// Product, and Customers must exist before the purchases that wait on them.
var backupKinds = []string{"Product", "Customer", "Purchase"}

// backup writes every Product, Customer and Purchase of ns, with status, as
// one YAML List.
func backup(ctx context.Context, c client.Client, ns string, out io.Writer) error {
	list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List"}}
	for _, kind := range backupKinds {
		var objs unstructured.UnstructuredList
		objs.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(kind + "List"))
		if err := c.List(ctx, &objs, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("backup: listing %ss: %w", kind, err)
		}
		for i := range objs.Items {
			o := &objs.Items[i]
			o.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(kind))
			unstructured.RemoveNestedField(o.Object, "metadata", "managedFields")
			list.Items = append(list.Items, *o)
		}
	}
	b, err := yaml.Marshal(list.UnstructuredContent())
	if err != nil {
		return fmt.Errorf("backup: encoding: %w", err)
	}
	_, err = out.Write(b)
	return err
}

// restore creates the objects of a backup in ns and then writes each one's
// status through the status subresource, which a plain create ignores: a
// Purchase's status is the payment (phase, PaymentIntent, expiry), so
// without it a restored purchase would look unpaid. Objects that already
// exist are left alone. The operator must be stopped while it runs, or it
// could act on a restored Purchase before its status is back.
func restore(ctx context.Context, c client.Client, ns string, in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("restore: reading the backup: %w", err)
	}
	var list unstructured.UnstructuredList
	if err := yaml.Unmarshal(data, &list.Object); err != nil {
		return fmt.Errorf("restore: parsing the backup: %w", err)
	}
	items, found, err := unstructured.NestedSlice(list.Object, "items")
	if err != nil {
		return fmt.Errorf("restore: this is not a backup: %w", err)
	}
	if !found {
		return errors.New("restore: this is not a backup: it has no list of items")
	}
	byKind := map[string][]*unstructured.Unstructured{}
	for i, raw := range items {
		m, ok := raw.(map[string]any)
		if !ok {
			return fmt.Errorf("restore: item %d is not an object", i)
		}
		o := &unstructured.Unstructured{Object: m}
		gvk := o.GroupVersionKind()
		if gvk.GroupVersion() != v1alpha1.GroupVersion {
			return fmt.Errorf("restore: item %d is a %s, not a paytoview object", i, gvk)
		}
		byKind[gvk.Kind] = append(byKind[gvk.Kind], o)
	}
	created, skipped := 0, 0
	for _, kind := range backupKinds {
		for _, saved := range byKind[kind] {
			ok, err := restoreOne(ctx, c, ns, saved)
			if err != nil {
				return err
			}
			if ok {
				created++
			} else {
				skipped++
			}
		}
	}
	fmt.Fprintf(out, "restored %d objects into %s (%d already existed and were left alone)\n", created, ns, skipped)
	return nil
}

func restoreOne(ctx context.Context, c client.Client, ns string, saved *unstructured.Unstructured) (bool, error) {
	status, hasStatus, _ := unstructured.NestedMap(saved.Object, "status")
	obj := saved.DeepCopy()
	unstructured.RemoveNestedField(obj.Object, "status")
	for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "ownerReferences", "deletionTimestamp", "deletionGracePeriodSeconds"} {
		unstructured.RemoveNestedField(obj.Object, "metadata", f)
	}
	obj.SetNamespace(ns)
	what := fmt.Sprintf("%s %s/%s", obj.GetKind(), ns, obj.GetName())
	if err := c.Create(ctx, obj); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return false, nil
		}
		return false, fmt.Errorf("restore: creating %s: %w", what, err)
	}
	if hasStatus {
		if err := unstructured.SetNestedMap(obj.Object, status, "status"); err != nil {
			return false, fmt.Errorf("restore: %s: %w", what, err)
		}
		if err := c.Status().Update(ctx, obj); err != nil {
			return false, fmt.Errorf("restore: writing the status of %s: %w", what, err)
		}
	}
	return true, nil
}
