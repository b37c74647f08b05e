package main

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestWriter(t *testing.T) {
	at := func(s int) *metav1.Time { v := metav1.NewTime(time.Unix(int64(s), 0)); return &v }
	managed := []metav1.ManagedFieldsEntry{
		{Manager: "flux-record", Operation: metav1.ManagedFieldsOperationApply, Time: at(10)},
		{Manager: "kustomize-controller", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(12)},
		{Manager: "kustomize-controller", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", Time: at(11)},
	}
	ready := map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}
	failed := map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "False"}}}
	for _, tc := range []struct {
		name      string
		prev, obj map[string]any
		managed   []metav1.ManagedFieldsEntry
		want      string
	}{
		{"created without status", nil, map[string]any{"spec": 1}, managed[:1], "flux-record"},
		{"status changed", map[string]any{"status": ready}, map[string]any{"status": failed}, managed, "kustomize-controller"},
		{"finalizer added", map[string]any{"status": ready}, map[string]any{"status": ready, "metadata": 1}, managed, "kustomize-controller"},
		{"spec applied", map[string]any{"status": ready}, map[string]any{"status": ready, "spec": 2}, managed[:1], "flux-record"},
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
