package main

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestWriter(t *testing.T) {
	at := func(s int) *metav1.Time { v := metav1.NewTime(time.Unix(int64(s), 0)); return &v }
	fields := func(s string) *metav1.FieldsV1 { return &metav1.FieldsV1{Raw: []byte(s)} }
	// Written in the same second: the recorder's spec, then the
	// controller's finalizer; the later write is listed first.
	sameSecond := []metav1.ManagedFieldsEntry{
		{Manager: "flux-record", Operation: metav1.ManagedFieldsOperationApply, Time: at(10), FieldsV1: fields(`{"f:spec":{"f:interval":{}}}`)},
		{Manager: "gotk-kustomize-controller", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(10), FieldsV1: fields(`{"f:metadata":{"f:finalizers":{".":{},"v:\"finalizers.fluxcd.io\"":{}}}}`)},
		{Manager: "gotk-kustomize-controller", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", Time: at(11), FieldsV1: fields(`{"f:status":{}}`)},
	}
	ready := map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}
	failed := map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "False"}}}
	spec := map[string]any{"interval": "10s"}
	withFinalizer := map[string]any{"finalizers": []any{"finalizers.fluxcd.io"}}
	for _, tc := range []struct {
		name      string
		prev, obj map[string]any
		managed   []metav1.ManagedFieldsEntry
		want      string
	}{
		{"created without status", nil, map[string]any{"spec": spec}, sameSecond[:1], "flux-record"},
		{"finalizer added in the second the spec was written", map[string]any{"spec": spec}, map[string]any{"spec": spec, "metadata": withFinalizer}, sameSecond[:2], "gotk-kustomize-controller"},
		{"status changed", map[string]any{"spec": spec, "status": ready}, map[string]any{"spec": spec, "status": failed}, sameSecond, "gotk-kustomize-controller"},
		{"spec applied", map[string]any{"spec": spec, "status": ready}, map[string]any{"spec": map[string]any{"interval": "1m"}, "status": ready}, sameSecond, "flux-record"},
		{"no managed fields", nil, map[string]any{}, nil, "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{Object: map[string]any{}}
			u.SetManagedFields(tc.managed)
			if got := writer(u, tc.prev, tc.obj); got != tc.want {
				t.Errorf("writer = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStrip(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{"kind": "Kustomization", "status": map[string]any{"observedGeneration": int64(-1)}}}
	u.SetName("apps")
	u.SetNamespace("tl-x")
	u.SetUID("u1")
	u.SetResourceVersion("7")
	u.SetGeneration(2)
	u.SetFinalizers([]string{"finalizers.fluxcd.io"})
	u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "m"}})
	u.SetCreationTimestamp(metav1.Now())
	got := &unstructured.Unstructured{Object: strip(u.Object)}
	if got.GetNamespace() != "" || got.GetUID() != "" || got.GetResourceVersion() != "" || got.GetManagedFields() != nil || !got.GetCreationTimestamp().Time.IsZero() {
		t.Errorf("server bookkeeping kept: %v", got.Object["metadata"])
	}
	if got.GetName() != "apps" || got.GetGeneration() != 2 || len(got.GetFinalizers()) != 1 {
		t.Errorf("what the controllers wrote was dropped: %v", got.Object["metadata"])
	}
	if u.GetUID() != "u1" {
		t.Error("strip changed its input")
	}
}
