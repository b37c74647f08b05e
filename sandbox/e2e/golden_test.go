package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/collector"
	"github.com/flux-exporter/flux_exporter/kube"
	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
)

// TestGolden stores each testdata/golden/<case>.yaml (objects with the status
// their controller writes) in its own namespace of a real API server, reads
// it back through the exporter's informer and collector, and compares the
// exposition with <case>.prom. Run with -update to rewrite the .prom files,
// then review the diff: the files are the specification.
//
// UIDs differ per run, so the files name them UID_<object name>; creation
// timestamps are checked against the server instead of the file.
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob(filepath.Join("testdata", "golden", "*.yaml"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	c := newCluster(t, apiserver.ModeCRD)
	crd, err := os.ReadFile(filepath.Join("testdata", "crds", "artifactgenerator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.srv.InstallCRDs(t.Context(), crd); err != nil {
		t.Fatal(err)
	}
	exp, err := collector.New(collector.Deps{Flux: nil}, collector.DefaultSelection())
	if err == nil || exp != nil {
		t.Fatal("collector.New accepted a missing cache")
	}
	for _, path := range cases {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) { runGolden(t, c, name, path) })
	}
}

func runGolden(t *testing.T, c *cluster, ns, path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]string{}
	created := map[string]time.Time{}
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		u.SetNamespace(ns)
		out, err := yaml.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		stored := c.apply(t, out)
		if _, dup := uids[stored.GetName()]; dup {
			t.Fatalf("two objects named %q: golden files name UIDs by object name, so names must be unique per case", stored.GetName())
		}
		uids[stored.GetName()] = string(stored.GetUID())
		created[stored.GetName()] = stored.GetCreationTimestamp().Time
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dec := collector.NewDecoder(collector.DecoderOptions{})
	w, err := kube.NewWatcher(c.srv.RESTConfig(), kube.WatcherOptions{Namespaces: []string{ns}, Transform: dec.Decode})
	if err != nil {
		t.Fatal(err)
	}
	go w.Run(ctx)
	if _, err := collector.New(collector.Deps{Flux: w}, collector.DefaultSelection()); err == nil {
		t.Fatal("collector.New accepted a cache without its Decoder")
	}
	exp, err := collector.New(collector.Deps{Flux: w, Decoder: dec}, collector.DefaultSelection())
	if err != nil {
		t.Fatal(err)
	}
	scrape := exp.Scrape(ctx)
	eventually(t, 15*time.Second, func() error {
		if ok, pending := w.Ready(); !ok {
			return fmt.Errorf("caches syncing: %v", pending)
		}
		for _, ks := range w.State() {
			n := 0
			for _, r := range ks.Records {
				if _, ok := uids[r.(*collector.Record).Name]; ok {
					n++
				}
			}
			if n != len(ks.Records) {
				return fmt.Errorf("unexpected records in %s", ks.Kind.Kind)
			}
		}
		if objects := countObjects(w); objects != len(uids) {
			return fmt.Errorf("%d objects cached, want %d", objects, len(uids))
		}
		return nil
	})

	names := goldenFamilies()
	golden := strings.TrimSuffix(path, ".yaml") + ".prom"
	if *update {
		text := gatherText(t, scrape, names)
		for obj, uid := range uids {
			text = strings.ReplaceAll(text, `uid="`+uid+`"`, `uid="UID_`+obj+`"`)
		}
		if err := os.WriteFile(golden, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it, then review it)", err)
	}
	expected := string(want)
	for obj, uid := range uids {
		expected = strings.ReplaceAll(expected, `uid="UID_`+obj+`"`, `uid="`+uid+`"`)
	}
	if err := testutil.CollectAndCompare(scrape, strings.NewReader(expected), names...); err != nil {
		t.Fatal(err)
	}

	// Creation timestamps come from the server, so they are checked here.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(scrape)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "flux_resource_created_timestamp_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			obj := labels(m)["name"]
			if got, want := m.GetGauge().GetValue(), float64(created[obj].Unix()); got != want {
				t.Errorf("%s created %v, want %v", obj, got, want)
			}
		}
	}
	if problems, err := testutil.CollectAndLint(scrape); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

func countObjects(w *kube.Watcher) int {
	n := 0
	for _, ks := range w.State() {
		n += len(ks.Records)
	}
	return n
}

// goldenFamilies are the families a golden file pins: the per-object ones
// and the fault counter. Not the creation time, which the server sets, nor
// the kind-level and scrape families, which other tests check.
func goldenFamilies() []string {
	out := []string{"flux_exporter_object_errors_total"}
	for _, f := range collector.Families() {
		name := f.Name
		if strings.HasPrefix(name, "flux_exporter_") || name == "flux_resource_created_timestamp_seconds" {
			continue
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

func gatherText(t *testing.T, c prometheus.Collector, names []string) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, f := range fams {
		if !slices.Contains(names, f.GetName()) {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
