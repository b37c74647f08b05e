package kube

// CRD discovery: which Flux kinds are served, at which version, and the
// Flux release their CRDs are labelled with.

import (
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// crdRecord is the compact form of a CRD: only what decides whether and how
// a Flux kind is watched.
type crdRecord struct {
	name, group, kind, resource string
	namespaced, established     bool
	version, fluxVersion        string
}

func (r *crdRecord) GetObjectMeta() metav1.Object { return &metav1.ObjectMeta{Name: r.name} }

func (w *Watcher[R]) transformCRD(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil // already compact (the transform may see its own output)
	}
	r := &crdRecord{name: u.GetName(), fluxVersion: u.GetLabels()["app.kubernetes.io/version"]}
	r.group, _, _ = unstructured.NestedString(u.Object, "spec", "group")
	if !w.groups[r.group] {
		return r, nil
	}
	r.kind, _, _ = unstructured.NestedString(u.Object, "spec", "names", "kind")
	r.resource, _, _ = unstructured.NestedString(u.Object, "spec", "names", "plural")
	scope, _, _ := unstructured.NestedString(u.Object, "spec", "scope")
	r.namespaced = scope == "Namespaced"
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
			r.established = true
		}
	}
	r.version = preferredVersion(u)
	return r, nil
}

// preferredVersion is the served version kubectl reads: the highest by
// Kubernetes version priority (v2 > v1 > v1beta3 > v1alpha1).
func preferredVersion(u *unstructured.Unstructured) string {
	versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
	var served []string
	for _, v := range versions {
		m, ok := v.(map[string]any)
		if !ok || m["served"] != true {
			continue
		}
		if name, ok := m["name"].(string); ok {
			served = append(served, name)
		}
	}
	if len(served) == 0 {
		return ""
	}
	sort.Slice(served, func(i, j int) bool {
		return version.CompareKubeAwareVersionStrings(served[i], served[j]) > 0
	})
	return served[0]
}

// reconcile makes the running informers match the Established CRDs of the
// watched groups. It runs on every CRD event; CRDs are few, so a full diff
// is cheap.
func (w *Watcher[R]) reconcile() {
	want := map[string]Kind{}
	for _, obj := range w.crds.GetStore().List() {
		r, ok := obj.(*crdRecord)
		if !ok || !r.established || r.version == "" || !w.groups[r.group] {
			continue
		}
		want[r.group+"/"+r.kind] = Kind{Group: r.group, Version: r.version, Kind: r.kind,
			Resource: r.resource, Namespaced: r.namespaced, FluxVersion: r.fluxVersion}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil {
		return
	}
	for key, kw := range w.kinds {
		if k, ok := want[key]; ok && k == kw.kind {
			continue
		}
		kw.stop()
		delete(w.kinds, key)
		w.log.Info("Stopped watching Flux kind", "kind", kw.kind.Kind, "group", kw.kind.Group, "version", kw.kind.Version)
	}
	for key, k := range want {
		if _, ok := w.kinds[key]; ok {
			continue
		}
		kw, err := w.start(k, w.sharding)
		if err != nil {
			w.log.Error("Cannot watch Flux kind", "kind", k.Kind, "group", k.Group, "err", err)
			continue
		}
		w.kinds[key] = kw
		w.log.Info("Watching Flux kind", "kind", k.Kind, "group", k.Group, "version", k.Version)
	}
}

// FluxVersion is the distribution version read from the Flux CRDs' labels,
// or "" when none carries it.
func (w *Watcher[R]) FluxVersion() string {
	// Read the kinds, not State(): that copies every cached record, and
	// the controllers collector asks on every scrape.
	w.mu.RLock()
	defer w.mu.RUnlock()
	var first *Kind
	for _, kw := range w.kinds {
		k := kw.kind
		// Only Flux's own CRDs carry the distribution version; the Flux
		// Operator's carry the operator's.
		if k.FluxVersion == "" || !strings.HasSuffix(k.Group, ".toolkit.fluxcd.io") {
			continue
		}
		// The same choice as the first labelled kind in State's order.
		if first == nil || k.Kind < first.Kind || (k.Kind == first.Kind && k.Group < first.Group) {
			first = &k
		}
	}
	if first == nil {
		return ""
	}
	return first.FluxVersion
}
