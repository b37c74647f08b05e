package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/internal/collector"
	"github.com/flux-exporter/flux_exporter/internal/kube"
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
	// Every family, opt-in ones too: the golden files hold all of them.
	everyFamily, err := collector.NewMetricFilter(nil, nil, []string{"."})
	if err != nil {
		t.Fatal(err)
	}
	dec := collector.NewDecoder(collector.DecoderOptions{Filter: everyFamily})
	w, err := kube.NewWatcher(c.srv.RESTConfig(), kube.WatcherOptions[*collector.Record]{Namespaces: []string{ns}, Transform: dec.Decode})
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
	eventually(t, 15*time.Second, func() error {
		if ok, pending := w.Ready(); !ok {
			return fmt.Errorf("caches syncing: %v", pending)
		}
		for _, ks := range w.State() {
			n := 0
			for _, r := range ks.Records {
				if _, ok := uids[r.Name]; ok {
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
	fams := scrapeFamilies(t, exp)
	if *update {
		text := familiesText(t, fams, names)
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
	if got := familiesText(t, fams, names); got != expected {
		t.Fatalf("the scrape differs from %s (run with -update and review the diff):\n%s", golden, lineDiff(expected, got))
	}

	// Creation timestamps come from the server, so they are checked here.
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
	gatherer := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return fams, nil })
	if problems, err := testutil.GatherAndLint(gatherer); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

// scrapeFamilies runs one scrape as the HTTP handler does, the only path
// series take out of the exporter (collector.Exporter.Scrape: the
// collectors gathered, then the records' bytes written), and parses the
// text it writes with Prometheus's own parser.
func scrapeFamilies(t *testing.T, exp *collector.Exporter) []*dto.MetricFamily {
	t.Helper()
	c, write := exp.Scrape(t.Context())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	enc := expfmt.NewEncoder(w, format)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	if err := write(w, format); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(&b)
	if err != nil {
		t.Fatalf("the scrape does not parse: %v", err)
	}
	names := slices.Sorted(maps.Keys(parsed))
	out := make([]*dto.MetricFamily, 0, len(names))
	for _, n := range names {
		out = append(out, parsed[n])
	}
	return out
}

// familiesText writes the families named in names in the text format,
// series sorted by their labels as client_golang sorts them.
func familiesText(t *testing.T, fams []*dto.MetricFamily, names []string) string {
	t.Helper()
	var b bytes.Buffer
	for _, f := range fams {
		if !slices.Contains(names, f.GetName()) {
			continue
		}
		slices.SortStableFunc(f.Metric, func(a, b *dto.Metric) int { return compareLabels(a.GetLabel(), b.GetLabel()) })
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// compareLabels orders label sets as client_golang's registry does.
func compareLabels(a, b []*dto.LabelPair) int {
	for i := range min(len(a), len(b)) {
		if c := strings.Compare(a[i].GetValue(), b[i].GetValue()); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

func countObjects(w *kube.Watcher[*collector.Record]) int {
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
