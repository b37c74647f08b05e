package collector

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// exportedFormats are the formats the metrics endpoint offers.
var exportedFormats = []expfmt.Format{
	expfmt.NewFormat(expfmt.TypeTextPlain),
	expfmt.NewFormat(expfmt.TypeOpenMetrics),
}

// recordsCollector sends the records' series the Collector way.
type recordsCollector []*Record

func (c recordsCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }
func (c recordsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, rec := range c {
		ms, _ := rec.metrics()
		for _, m := range ms {
			ch <- m
		}
	}
}

// sameAsClientGolang compares what writeObjects writes for the records with
// what client_golang's registry and encoder write for the same series: the
// same lines, family by family, in any order within a family (the encoder
// sorts series, the fast path keeps cache order).
func sameAsClientGolang(records []*Record, format expfmt.Format) error {
	return sameAsCollected(recordsCollector(records), records, format)
}

// sameAsCollected is sameAsClientGolang with the collector to gather.
func sameAsCollected(c prometheus.Collector, records []*Record, format expfmt.Format) error {
	var fast bytes.Buffer
	w := bufio.NewWriter(&fast)
	style, ok := styleOf(format)
	if !ok {
		return fmt.Errorf("no style for %s", format)
	}
	if err := writeObjects(w, records, style); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		return err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return fmt.Errorf("gather: %w", err)
	}
	var slow bytes.Buffer
	enc := expfmt.NewEncoder(&slow, format)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return fmt.Errorf("encode: %w", err)
		}
	}
	if got, want := byFamily(fast.String()), byFamily(slow.String()); !slices.Equal(got, want) {
		return fmt.Errorf("fast path in %s differs from client_golang:\n--- fast\n%s\n--- client_golang\n%s", format, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	return nil
}

// byFamily normalises an exposition: each family's header, then its sample
// lines sorted.
func byFamily(text string) []string {
	var out, block []string
	flush := func() {
		slices.Sort(block)
		out = append(out, block...)
		block = nil
	}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "# HELP ") {
			flush()
		}
		if strings.HasPrefix(line, "#") {
			out = append(out, line)
			continue
		}
		block = append(block, line)
	}
	flush()
	return out
}

func TestWriteObjectsMatchesClientGolang(t *testing.T) {
	var records []*Record
	for _, doc := range []string{
		`{"apiVersion":"helm.toolkit.fluxcd.io/v2","kind":"HelmRelease","metadata":{"name":"podinfo","namespace":"apps","uid":"u1","generation":3,"creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"interval":"10m","chart":{"spec":{"chart":"podinfo","sourceRef":{"kind":"HelmRepository","name":"podinfo"}}}},"status":{"observedGeneration":3,"failures":2,"lastAttemptedReleaseActionDuration":"1m2.5s","history":[{"chartName":"podinfo","chartVersion":"6.7.1","appVersion":"6.7.1","status":"deployed","action":"upgrade","version":4,"lastDeployed":"2026-01-02T00:00:00.5Z"}],"conditions":[{"type":"Ready","status":"True","reason":"UpgradeSucceeded","observedGeneration":3,"lastTransitionTime":"2026-01-02T00:00:00Z"}]}}`,
		// Label values that need escaping, a value that is not an integer.
		`{"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization","metadata":{"name":"q\"uo\\te","namespace":"line\nfeed","uid":"u2","generation":1},"spec":{"interval":"1.5s","path":"./a \"b\"\\c\nd","sourceRef":{"kind":"GitRepository","name":"repo"}},"status":{"inventory":{"entries":[{},{}]},"history":[{"lastReconciledDuration":"0.001s","totalReconciliations":1e21}]}}`,
		`{"apiVersion":"notification.toolkit.fluxcd.io/v1beta3","kind":"Alert","metadata":{"name":"on-call","namespace":"ops","uid":"u3"},"spec":{"suspend":true}}`,
	} {
		kind, rec := decodeYAML(t, doc)
		_ = kind
		records = append(records, rec)
	}
	for _, f := range exportedFormats {
		if err := sameAsClientGolang(records, f); err != nil {
			t.Error(err)
		}
	}
}

func TestMetricFilter(t *testing.T) {
	if _, err := NewMetricFilter([]string{"a"}, []string{"b"}, nil); err == nil {
		t.Error("allowlist and denylist together were accepted")
	}
	if _, err := NewMetricFilter([]string{"("}, nil, nil); err == nil || !strings.Contains(err.Error(), "--metric-allowlist") {
		t.Errorf("a bad regular expression gave %v, want an error naming the flag", err)
	}
	allow, _ := NewMetricFilter([]string{"^flux_resource_info$", "helmrelease"}, nil, nil)
	deny, _ := NewMetricFilter(nil, []string{"_timestamp_seconds$"}, nil)
	none, _ := NewMetricFilter(nil, nil, nil)
	for _, tc := range []struct {
		f    *MetricFilter
		name string
		want bool
	}{
		{allow, "flux_resource_info", true},
		{allow, "flux_resource_info_extra", false},
		{allow, "flux_helmrelease_failures", true},
		{allow, "flux_resource_suspended", false},
		{deny, "flux_resource_created_timestamp_seconds", false},
		{deny, "flux_resource_info", true},
		{none, "anything", true},
		{nil, "anything", true},
	} {
		if got := tc.f.Includes(tc.name); got != tc.want {
			t.Errorf("Includes(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMetricFilterOptIn(t *testing.T) {
	if _, err := NewMetricFilter(nil, nil, []string{"["}); err == nil || !strings.Contains(err.Error(), "--metric-opt-in-list") {
		t.Errorf("a bad opt-in regular expression gave %v, want an error naming the flag", err)
	}
	optIn, _ := NewMetricFilter(nil, nil, []string{"^flux_resource_dependents$"})
	all, _ := NewMetricFilter(nil, nil, []string{"."})
	denyOptIn, _ := NewMetricFilter(nil, []string{"dependents"}, []string{"."})
	onByDefault := catalog.Family{Name: "flux_resource_info"}
	dependents := catalog.Family{Name: "flux_resource_dependents", OptIn: true}
	created := catalog.Family{Name: "flux_resource_created_timestamp_seconds", OptIn: true}
	for _, tc := range []struct {
		name string
		f    *MetricFilter
		fam  catalog.Family
		want bool
	}{
		{"nil filter, default family", nil, onByDefault, true},
		{"nil filter, opt-in family", nil, dependents, false},
		{"named opt-in", optIn, dependents, true},
		{"other opt-in", optIn, created, false},
		{"default family beside an opt-in list", optIn, onByDefault, true},
		{"'.' turns on every opt-in", all, created, true},
		{"the denylist still applies", denyOptIn, dependents, false},
	} {
		if got := tc.f.Exports(tc.fam); got != tc.want {
			t.Errorf("%s: Exports(%s) = %v, want %v", tc.name, tc.fam.Name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name               string
		allow, deny, optIn []string
		want               []string // what each warning says, in order
	}{
		{"a used entry", nil, nil, []string{"^flux_resource_dependents$"}, nil},
		{"a typo and a family on by default", nil, nil, []string{"^flux_resource_dependents$", "flux_resource_dependants", "^flux_resource_info$"},
			[]string{`"flux_resource_dependants" matches no opt-in family; the opt-in families are `, `"^flux_resource_info$" matches no opt-in family`}},
		{"opted in and denied", nil, []string{"dependents"}, []string{"flux_resource_dependents"}, []string{`"flux_resource_dependents" turns on only families that`}},
		{"opted in, not allowed", []string{"^flux_resource_info$"}, nil, []string{"suspended"}, []string{`"suspended" turns on only families that`}},
		{"allowed, not opted in", []string{"^flux_resource_suspended$", "^flux_resource_info$"}, nil, nil, []string{`--metric-allowlist: "^flux_resource_suspended$" matches only opt-in families`}},
		{"'.' with one denied", nil, []string{"dependents"}, []string{"."}, nil},
	} {
		f, err := NewMetricFilter(tc.allow, tc.deny, tc.optIn)
		if err != nil {
			t.Fatal(err)
		}
		got := f.Warnings(Families())
		if len(got) != len(tc.want) {
			t.Errorf("%s: warnings %q, want %d", tc.name, got, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: warning %q does not say %q", tc.name, got[i], w)
			}
		}
	}
}

// TestOptInFamiliesAreOffByDefault: an opt-in family is rendered only when
// the opt-in list names it.
func TestOptInFamiliesAreOffByDefault(t *testing.T) {
	doc := `{"apiVersion":"source.toolkit.fluxcd.io/v1","kind":"GitRepository","metadata":{"name":"a","namespace":"b","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"suspend":true},"status":{"artifact":{"size":10}}}`
	has := func(rec *Record, name string) bool {
		for _, s := range rec.series {
			if families[s.family].name == name {
				return true
			}
		}
		return false
	}
	_, rec := decodeYAMLWith(t, DecoderOptions{}, doc)
	for _, name := range []string{"flux_resource_created_timestamp_seconds", "flux_source_artifact_size_bytes", "flux_resource_suspended"} {
		if has(rec, name) {
			t.Errorf("the opt-in family %s was rendered by default", name)
		}
	}
	if !has(rec, "flux_resource_info") {
		t.Error("flux_resource_info was not rendered by default")
	}
	optIn, _ := NewMetricFilter(nil, nil, []string{"created"})
	if _, rec := decodeYAMLWith(t, DecoderOptions{Filter: optIn}, doc); !has(rec, "flux_resource_created_timestamp_seconds") || has(rec, "flux_source_artifact_size_bytes") {
		t.Error("--metric-opt-in-list=created did not turn on exactly flux_resource_created_timestamp_seconds")
	}
}

// TestFilteredFamiliesAreNotRendered: a denied per-object family costs no
// memory, because Decode does not render it.
func TestFilteredFamiliesAreNotRendered(t *testing.T) {
	deny, _ := NewMetricFilter(nil, []string{"^flux_resource_condition"}, nil)
	_, rec := decodeYAMLWith(t, DecoderOptions{Filter: deny}, `{"apiVersion":"source.toolkit.fluxcd.io/v1","kind":"GitRepository","metadata":{"name":"a","namespace":"b"},"status":{"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}`)
	for _, s := range rec.series {
		if f := families[s.family]; !deny.Includes(f.name) {
			t.Errorf("the denied family %s was rendered", f.name)
		}
	}
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	if err := writeObjects(w, []*Record{rec}, textFloat); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	if strings.Contains(out.String(), "flux_resource_condition") || !strings.Contains(out.String(), "\nflux_resource_info{") {
		t.Errorf("the scrape does not follow the filter:\n%s", out.String())
	}
}

// BenchmarkWriteObjects measures the fast path alone: writing 10,000
// records' series, plain and through gzip as a scrape would. make bench
// measures whole scrapes over HTTP beside kube-state-metrics.
func BenchmarkWriteObjects(b *testing.B) {
	templates := []string{
		`{"apiVersion":"helm.toolkit.fluxcd.io/v2","kind":"HelmRelease","metadata":{"name":"app-%d","namespace":"team-%d","uid":"5d1c8e4e-1111-4b7c-9a3e-%012d","generation":3,"creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"interval":"10m","chart":{"spec":{"chart":"podinfo","sourceRef":{"kind":"HelmRepository","name":"podinfo"}}}},"status":{"observedGeneration":3,"lastAttemptedRevision":"6.7.1","history":[{"chartName":"podinfo","chartVersion":"6.7.1","appVersion":"6.7.1","status":"deployed","action":"upgrade","version":4,"lastDeployed":"2026-01-02T00:00:00Z"}],"conditions":[{"type":"Ready","status":"True","reason":"UpgradeSucceeded","observedGeneration":3,"lastTransitionTime":"2026-01-02T00:00:00Z"},{"type":"Released","status":"True","reason":"UpgradeSucceeded","observedGeneration":3,"lastTransitionTime":"2026-01-02T00:00:00Z"}]}}`,
		`{"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization","metadata":{"name":"app-%d","namespace":"team-%d","uid":"5d1c8e4e-2222-4b7c-9a3e-%012d","generation":1,"creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"interval":"10m","path":"./deploy","sourceRef":{"kind":"GitRepository","name":"repo"}},"status":{"observedGeneration":1,"lastAppliedRevision":"main@sha1:4b825dc642cb6eb9a060e54bf8d69288fbee4904","lastAttemptedRevision":"main@sha1:4b825dc642cb6eb9a060e54bf8d69288fbee4904","inventory":{"entries":[{},{},{}]},"history":[{"lastReconciled":"2026-01-02T00:00:00Z","lastReconciledDuration":"2.5s","totalReconciliations":12}],"conditions":[{"type":"Ready","status":"True","reason":"ReconciliationSucceeded","observedGeneration":1,"lastTransitionTime":"2026-01-02T00:00:00Z"}]}}`,
		`{"apiVersion":"source.toolkit.fluxcd.io/v1","kind":"GitRepository","metadata":{"name":"app-%d","namespace":"team-%d","uid":"5d1c8e4e-3333-4b7c-9a3e-%012d","generation":1,"creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"interval":"5m","url":"https://github.com/acme/app","ref":{"branch":"main"}},"status":{"observedGeneration":1,"artifact":{"revision":"main@sha1:4b825dc642cb6eb9a060e54bf8d69288fbee4904","size":123456,"lastUpdateTime":"2026-01-02T00:00:00Z"},"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","observedGeneration":1,"lastTransitionTime":"2026-01-02T00:00:00Z"},{"type":"ArtifactInStorage","status":"True","reason":"Succeeded","observedGeneration":1,"lastTransitionTime":"2026-01-02T00:00:00Z"}]}}`,
	}
	var records []*Record
	nseries := 0
	for i := range 10000 {
		_, rec := decodeYAML(b, fmt.Sprintf(templates[i%len(templates)], i, i%20, i))
		records = append(records, rec)
		nseries += len(rec.series)
	}
	for _, gz := range []bool{false, true} {
		name := "plain"
		if gz {
			name = "gzip"
		}
		b.Run(name, func(b *testing.B) {
			var out io.Writer = io.Discard
			var zw *gzip.Writer
			if gz {
				zw = gzip.NewWriter(io.Discard)
				out = zw
			}
			w := bufio.NewWriterSize(out, 64<<10)
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				if zw != nil {
					zw.Reset(io.Discard)
				}
				w.Reset(out)
				if err := writeObjects(w, records, textFloat); err != nil {
					b.Fatal(err)
				}
				_ = w.Flush()
				if zw != nil {
					_ = zw.Close()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(nseries), "ns/series")
			// CPU time as well: on a shared machine the wall clock also
			// counts other processes' turns.
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/float64(nseries), "cpu-ns/series")
		})
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
