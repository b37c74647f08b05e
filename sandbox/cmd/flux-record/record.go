package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/flux-exporter/flux_exporter/sandbox/recorded"
)

// recordedKinds are the Flux kinds a scenario's watch follows.
var recordedKinds = map[string]schema.GroupVersionResource{
	"GitRepository":  {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"},
	"HelmRepository": {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "helmrepositories"},
	"HelmChart":      {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "helmcharts"},
	"Kustomization":  {Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"},
	"HelmRelease":    {Group: "helm.toolkit.fluxcd.io", Version: "v2", Resource: "helmreleases"},
}

// tape collects the states of one namespace's Flux objects as the API
// server's watches deliver them.
type tape struct {
	start time.Time
	mu    sync.Mutex
	last  map[string]map[string]any // kind/name → last recorded object
	fix   recorded.Fixture
}

// follow starts a watch per kind in ns; it records until ctx ends and
// returns once every watch is established.
func (w *world) follow(ctx context.Context, ns string, tp *tape) (*sync.WaitGroup, error) {
	var wg sync.WaitGroup
	kinds := make([]string, 0, len(recordedKinds))
	for k := range recordedKinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, kind := range kinds {
		wi, err := w.dyn.Resource(recordedKinds[kind]).Namespace(ns).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			return &wg, fmt.Errorf("watch %s in %s: %w", kind, ns, err)
		}
		wg.Go(func() {
			defer wi.Stop()
			for ev := range wi.ResultChan() {
				if u, ok := ev.Object.(*unstructured.Unstructured); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
					tp.add(time.Now(), u)
				}
			}
		})
	}
	return &wg, nil
}

// add records u if it differs from the object's last recorded state.
func (tp *tape) add(at time.Time, u *unstructured.Unstructured) {
	obj := strip(u.Object)
	key := u.GetKind() + "/" + u.GetName()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	prev := tp.last[key]
	if prev != nil && recorded.Equal(prev, obj) {
		return
	}
	tp.last[key] = obj
	tp.fix.States = append(tp.fix.States, recorded.State{
		At: recorded.Offset(at.Sub(tp.start)), By: writer(u, prev, obj), Object: obj,
	})
}

func (tp *tape) act(format string, args ...any) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.fix.Actions = append(tp.fix.Actions, recorded.Action{
		At: recorded.Offset(time.Since(tp.start)), Do: fmt.Sprintf(format, args...),
	})
}

// strip drops what the API server, not the controller, writes; the
// namespace goes too, as the replay writes into a namespace of its own.
func strip(obj map[string]any) map[string]any {
	out := unstructured.Unstructured{Object: deepCopy(obj)}
	for _, f := range []string{"managedFields", "resourceVersion", "uid", "creationTimestamp", "namespace", "selfLink"} {
		unstructured.RemoveNestedField(out.Object, "metadata", f)
	}
	if len(out.GetAnnotations()) == 0 {
		unstructured.RemoveNestedField(out.Object, "metadata", "annotations")
	}
	return out.Object
}

func deepCopy(obj map[string]any) map[string]any {
	return (&unstructured.Unstructured{Object: obj}).DeepCopy().Object
}

// writer names the field manager of the write that made obj from prev:
// among the managedFields entries that own the part that changed (the
// status through its subresource, else the finalizers, the spec or the
// annotations), the newest. Entry times have one-second precision, so the
// owned fields, not the times, tell a controller's finalizer from the
// recorder's spec written in the same second.
func writer(u *unstructured.Unstructured, prev, obj map[string]any) string {
	entries := slices.Clone(u.GetManagedFields())
	slices.SortStableFunc(entries, func(a, b metav1.ManagedFieldsEntry) int {
		return timeOf(b).Compare(timeOf(a))
	})
	status, field := changedPart(prev, obj)
	for _, e := range entries {
		if (e.Subresource == "status") == status && (field == "" || owns(e, field)) {
			return e.Manager
		}
	}
	if len(entries) > 0 {
		return entries[0].Manager
	}
	return "unknown"
}

// changedPart says what changed from prev to obj: the status, or else the
// first of the finalizers, the spec and the annotations that differs ("" if
// none does).
func changedPart(prev, obj map[string]any) (status bool, field string) {
	if prev == nil {
		return obj["status"] != nil, "f:spec"
	}
	if !recorded.Equal(prev["status"], obj["status"]) {
		return true, ""
	}
	meta := func(m map[string]any, k string) any { mm, _ := m["metadata"].(map[string]any); return mm[k] }
	switch {
	case !recorded.Equal(meta(prev, "finalizers"), meta(obj, "finalizers")):
		return false, "f:finalizers"
	case !recorded.Equal(prev["spec"], obj["spec"]):
		return false, "f:spec"
	case !recorded.Equal(meta(prev, "annotations"), meta(obj, "annotations")):
		return false, "f:annotations"
	}
	return false, ""
}

// owns tells whether the entry's fields include the named one.
func owns(e metav1.ManagedFieldsEntry, field string) bool {
	return e.FieldsV1 != nil && strings.Contains(string(e.FieldsV1.Raw), `"`+field+`"`)
}

func timeOf(e metav1.ManagedFieldsEntry) time.Time {
	if e.Time == nil {
		return time.Time{}
	}
	return e.Time.Time
}
