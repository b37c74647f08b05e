package fleet

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
)

// listFleet lists every fleet kind from the server, keyed by reference.
func listFleet(t *testing.T, ctx context.Context, cfg *rest.Config) map[objRef]*unstructured.Unstructured {
	t.Helper()
	c, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[objRef]*unstructured.Unstructured{}
	for _, gk := range Kinds {
		ri, _, err := c.resource(gk.Group, gk.Kind, "")
		if err != nil {
			t.Fatal(err)
		}
		list, err := ri.List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list %s: %v", gk.Kind, err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			out[objRef{u.GetKind(), u.GetNamespace(), u.GetName()}] = u
		}
	}
	return out
}

// normal round-trips a value through JSON so that planned and served
// values compare by content.
func normal(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestApplyMatchesPlan applies a fleet to a real API server with the real
// Flux CRDs: every object must be accepted, every status field kept (the
// server prunes fields its schema does not know), and the counts a client
// sees must be those the seed asked for.
func TestApplyMatchesPlan(t *testing.T) {
	t.Parallel()
	s := apiserver.StartT(t, apiserver.Options{Mode: apiserver.ModeCRD})
	ctx := t.Context()
	f := mustGenerate(t, Options{Seed: 1, Objects: 300, Namespaces: 4})
	if err := Apply(ctx, s.RESTConfig(), f); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	served := listFleet(t, ctx, s.RESTConfig())
	if len(served) != len(f.Objects) {
		t.Fatalf("server has %d objects, the fleet %d", len(served), len(f.Objects))
	}
	var list []*unstructured.Unstructured
	for _, u := range served {
		list = append(list, u)
	}
	want, got := f.Summary(), Summarize(list)
	if !reflect.DeepEqual(want.Kinds, got.Kinds) {
		t.Errorf("per-kind counts differ\nplanned:\n%s\nserved:\n%s", want, got)
	}
	// The seed must have asked for every situation the exporter reports.
	for name, n := range map[string]int{
		"Ready=False": got.Total.ReadyFalse, "Ready=Unknown": got.Total.ReadyUnknown, "Stalled": got.Total.Stalled,
		"suspended": got.Total.Suspended, "without Ready": got.Total.NoReady,
		"failing Kustomizations": got.Kinds[KindKustomization].ReadyFalse,
		"failing HelmReleases":   got.Kinds[KindHelmRelease].ReadyFalse,
	} {
		if n == 0 {
			t.Errorf("no %s objects on the server", name)
		}
	}

	for _, o := range f.Objects {
		u := served[refOf(o)]
		if u == nil {
			t.Errorf("%s missing on the server", refOf(o))
			continue
		}
		if u.GetGeneration() != o.Generation {
			t.Errorf("%s: generation %d, planned %d", refOf(o), u.GetGeneration(), o.Generation)
		}
		status, _ := u.Object["status"].(map[string]any)
		switch o.State {
		case StateUnreconciled, StateNoStatus:
			// The CRDs default status to {observedGeneration: -1}; no controller wrote more.
			if _, ok := status["conditions"]; ok {
				t.Errorf("%s (%s) has conditions: %v", refOf(o), o.State, status["conditions"])
			}
		default:
			if w, g := normal(t, o.Status()), normal(t, status); !reflect.DeepEqual(w, g) {
				t.Errorf("%s: served status differs from the plan\nplanned: %v\nserved:  %v", refOf(o), w, g)
			}
		}
		// Spec fields must survive too; the server may add defaults.
		for k, v := range o.Object.Object["spec"].(map[string]any) {
			if w, g := normal(t, v), normal(t, u.Object["spec"].(map[string]any)[k]); !reflect.DeepEqual(w, g) {
				t.Errorf("%s: spec.%s = %v, planned %v", refOf(o), k, g, w)
			}
		}
	}
}

// BenchmarkApply10k reports how fast a 10,000-object fleet reaches a fresh
// CRD-mode server (create, generation edits and status), in objects/s.
func BenchmarkApply10k(b *testing.B) {
	f, err := Generate(Options{Seed: 1, Objects: 10_000, Namespaces: 20})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		s := apiserver.StartT(b, apiserver.Options{Mode: apiserver.ModeCRD})
		b.StartTimer()
		if err := Apply(b.Context(), s.RESTConfig(), f); err != nil {
			b.Fatalf("Apply: %v", err)
		}
	}
	b.ReportMetric(float64(len(f.Objects)*b.N)/b.Elapsed().Seconds(), "objects/s")
}

// TestApplyFullMode applies a fleet to a full kube-apiserver, where the
// fleet's namespaces must exist as Namespace objects first.
func TestApplyFullMode(t *testing.T) {
	t.Parallel()
	s := apiserver.StartT(t, apiserver.Options{Mode: apiserver.ModeFull})
	ctx := t.Context()
	f := mustGenerate(t, Options{Seed: 2, Objects: 60, Namespaces: 3})
	if err := Apply(ctx, s.RESTConfig(), f); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	c, err := newClient(s.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range f.Namespaces {
		if _, err := c.dyn.Resource(namespacesGVR).Get(ctx, ns, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace %s: %v", ns, err)
		}
	}
	if got := len(listFleet(t, ctx, s.RESTConfig())); got != len(f.Objects) {
		t.Errorf("server has %d objects, the fleet %d", got, len(f.Objects))
	}
}
