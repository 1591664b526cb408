package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var nodeListGVK = schema.GroupVersionKind{Version: "v1", Kind: "NodeList"}

// applyObject server-side applies obj (with its TypeMeta set) as the
// manager, taking ownership of every field it sets.
func applyObject(ctx context.Context, c client.Client, obj runtime.Object) error {
	_, err := applyObjectResult(ctx, c, obj)
	return err
}

// applyObjectResult is applyObject returning the object as the API server
// stored it.
func applyObjectResult(ctx context.Context, c client.Client, obj runtime.Object) (*unstructured.Unstructured, error) {
	return applyResultAs(ctx, c, obj, FieldOwner)
}

// applyAs is applyObject under another field owner: the fields of one
// object that two controllers of the manager write each under their own.
func applyAs(ctx context.Context, c client.Client, obj runtime.Object, owner string) error {
	_, err := applyResultAs(ctx, c, obj, owner)
	return err
}

func applyResultAs(ctx context.Context, c client.Client, obj runtime.Object, owner string) (*unstructured.Unstructured, error) {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: raw}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(owner), client.ForceOwnership); err != nil {
		return nil, err
	}
	return u, nil
}
