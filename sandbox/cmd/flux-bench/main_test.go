package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Both exporters' answers, as they write them: flux_exporter one family for
// every kind, kube-state-metrics one per kind with its own GVK labels.
const exporterScrape = `# HELP flux_resource_info Information about a Flux object.
# TYPE flux_resource_info gauge
flux_resource_info{exported_namespace="apps",kind="GitRepository",name="podinfo",path="",ready="True",reason="Succeeded",ref="main",revision="main@sha1:abc",source_name="",suspended="False",uid="u1",url="https://github.com/x/y"} 1
flux_resource_info{exported_namespace="apps",kind="Kustomization",name="podinfo",path="./deploy",ready="False",reason="",ref="",revision="",source_name="podinfo",suspended="False",uid="u2",url=""} 1
# HELP flux_resource_attempted_revision_info The revision the controller last attempted to apply.
# TYPE flux_resource_attempted_revision_info gauge
flux_resource_attempted_revision_info{exported_namespace="apps",kind="Kustomization",name="podinfo",revision="main@sha1:abc"} 1
flux_resource_generation{exported_namespace="apps",kind="GitRepository",name="podinfo"} 3
# EOF
`

const ksmScrape = `# HELP flux_gitrepository_resource_info Information about a GitRepository.
# TYPE flux_gitrepository_resource_info info
flux_gitrepository_resource_info{customresource_group="source.toolkit.fluxcd.io",customresource_kind="GitRepository",customresource_version="v1",exported_namespace="apps",name="podinfo",ready="False",reason="GitOperationFailed",suspended="false",uid="u1",url="https://github.com/x/y"} 1
# HELP flux_kustomization_resource_info Information about a Kustomization.
# TYPE flux_kustomization_resource_info info
flux_kustomization_resource_info{customresource_group="kustomize.toolkit.fluxcd.io",customresource_kind="Kustomization",customresource_version="v1",exported_namespace="apps",name="podinfo",ready="False",suspended="false",uid="u2"} 1
flux_kustomization_resource_attempted_revision_info{customresource_group="kustomize.toolkit.fluxcd.io",exported_namespace="apps",name="podinfo",revision="main@sha1:abc"} 1
`

func TestCountSamples(t *testing.T) {
	for _, c := range []struct {
		name, body, suffix string
		total, info        int
	}{
		{"flux_exporter", exporterScrape, "flux_resource_info", 4, 2},
		{"kube-state-metrics", ksmScrape, "_resource_info", 3, 2},
		{"no trailing newline", "a 1\nb_resource_info 1", "_resource_info", 2, 1},
		{"empty", "", "_resource_info", 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			total, info := countSamples([]byte(c.body), c.suffix)
			if total != c.total || info != c.info {
				t.Errorf("countSamples = %d, %d; want %d, %d", total, info, c.total, c.info)
			}
		})
	}
}

func TestFindLabel(t *testing.T) {
	got, ok, err := findLabel([]byte(exporterScrape), "flux_resource_info",
		map[string]string{"kind": "GitRepository", "exported_namespace": "apps", "name": "podinfo"}, "ready")
	if err != nil || !ok || got != "True" {
		t.Errorf("flux_exporter: ready = %q, %v, %v; want True", got, ok, err)
	}
	got, ok, err = findLabel([]byte(ksmScrape), "flux_gitrepository_resource_info",
		map[string]string{"exported_namespace": "apps", "name": "podinfo"}, "ready")
	if err != nil || !ok || got != "False" {
		t.Errorf("kube-state-metrics: ready = %q, %v, %v; want False", got, ok, err)
	}
	if _, ok, _ := findLabel([]byte(ksmScrape), "flux_gitrepository_resource_info",
		map[string]string{"name": "other"}, "ready"); ok {
		t.Error("found a series of another object")
	}
}

func TestParseLabels(t *testing.T) {
	got, err := parseLabels([]byte(`m{a="x",b="say \"hi\"\\n",c="line\nbreak",d="",} 1`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "x", "b": `say "hi"\n`, "c": "line\nbreak", "d": ""}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if got, err := parseLabels([]byte("m 1")); err != nil || len(got) != 0 {
		t.Errorf("no labels: %v, %v", got, err)
	}
	for _, bad := range []string{`m{a="x} 1`, `m{a=x} 1`, `m{a="x"`, `m{a="x"b="y"} 1`} {
		if _, err := parseLabels([]byte(bad)); err == nil {
			t.Errorf("parseLabels(%s) accepted it", bad)
		}
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 20; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 10 * time.Millisecond}, {90, 18 * time.Millisecond}, {99, 20 * time.Millisecond}, {100, 20 * time.Millisecond}} {
		if got := percentile(ds, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if ds[0] != 20*time.Millisecond {
		t.Error("percentile sorted its input")
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

func TestParseProcStatus(t *testing.T) {
	status := "Name:\tflux_exporter\nVmPeak:\t 1300000 kB\nVmHWM:\t   90112 kB\nVmRSS:\t   81920 kB\nThreads:\t9\n"
	m, err := parseProcStatus(status)
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 81920<<10 || m.HWM != 90112<<10 {
		t.Errorf("got %+v", m)
	}
	if _, err := parseProcStatus("Name:\tx\nVmRSS:\t1 kB\n"); err == nil {
		t.Error("accepted a status without VmHWM")
	}
}

func TestDecode(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = io.WriteString(zw, exporterScrape)
	_ = zw.Close()
	got, err := decode(buf.Bytes(), "gzip")
	if err != nil || string(got) != exporterScrape {
		t.Errorf("gzip: %v", err)
	}
	if got, err := decode([]byte("a 1\n"), ""); err != nil || string(got) != "a 1\n" {
		t.Errorf("identity: %q, %v", got, err)
	}
	if _, err := decode(nil, "br"); err == nil {
		t.Error("accepted an unknown encoding")
	}
}

func TestListenLine(t *testing.T) {
	for line, want := range map[string]string{
		`{"time":"x","level":"INFO","msg":"Listening on","address":"127.0.0.1:41234","http2":false}`:                 "127.0.0.1:41234",
		`{"time":"x","level":"INFO","msg":"Listening on","address":"127.0.0.1:9","listener":"events","http2":false}`: "",
		`{"msg":"Starting"}`:    "",
		`not json Listening on`: "",
	} {
		if got := listenLine([]byte(line)); got != want {
			t.Errorf("listenLine(%s) = %q, want %q", line, got, want)
		}
	}
}

func TestLogSinkFindsListenAcrossWrites(t *testing.T) {
	l := &logSink{}
	line := `{"msg":"Listening on","address":"127.0.0.1:5555"}` + "\n"
	_, _ = l.Write([]byte(`{"msg":"Starting"}` + "\n" + line[:20]))
	if l.listenAddress() != "" {
		t.Fatal("found an address in half a line")
	}
	_, _ = l.Write([]byte(line[20:]))
	if got := l.listenAddress(); got != "127.0.0.1:5555" {
		t.Errorf("listenAddress = %q", got)
	}
	for range 100 {
		_, _ = l.Write(bytes.Repeat([]byte("x"), 1000))
	}
	if n := len(l.tail()); n > logTail {
		t.Errorf("tail keeps %d bytes, bound %d", n, logTail)
	}
}

func TestSetReady(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"conditions": []any{
		map[string]any{"type": "ArtifactInStorage", "status": "True", "reason": "Succeeded"},
		map[string]any{"type": "Ready", "status": "True", "reason": "Succeeded", "lastTransitionTime": "2025-01-01T00:00:00Z"},
	}}}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := setReady(u, "False", now); err != nil {
		t.Fatal(err)
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	if got := readyOf(conds); got != "False" {
		t.Errorf("Ready = %q, want False", got)
	}
	ready := conds[1].(map[string]any)
	if ready["reason"] != "GitOperationFailed" || ready["lastTransitionTime"] != "2026-01-02T03:04:05Z" {
		t.Errorf("Ready condition = %v", ready)
	}
	if conds[0].(map[string]any)["status"] != "True" {
		t.Error("another condition changed")
	}
	if err := setReady(&unstructured.Unstructured{Object: map[string]any{}}, "True", now); err == nil {
		t.Error("set Ready on an object without conditions")
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.objects != 10000 || c.namespaces != 20 || c.seed != 42 || c.scrapes != 20 || c.freshness != 20 {
		t.Errorf("defaults: %+v", c)
	}
	if c, _ := parseFlags([]string{"--objects=100000"}, io.Discard); c.namespaces != 200 {
		t.Errorf("100,000 objects spread over %d namespaces, want 200", c.namespaces)
	}
	_, err = parseFlags([]string{"--objects=10", "--scrapes=5", "--freshness=1", "--timeout=0s", "extra"}, io.Discard)
	if err == nil {
		t.Fatal("accepted bad flags")
	}
	msg := err.Error()
	for _, want := range []string{"--objects 10", "--scrapes 5", "--freshness 1", "--timeout 0s", "unexpected arguments"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not name %s:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n != 5 {
		t.Errorf("%d lines for 5 bad settings:\n%s", n, msg)
	}
}

func TestRowsRatio(t *testing.T) {
	a := &result{samples: 100, gzip: []time.Duration{time.Millisecond}, plain: []time.Duration{time.Millisecond}}
	b := &result{samples: 200, gzip: []time.Duration{4 * time.Millisecond}, plain: []time.Duration{2 * time.Millisecond}}
	a.after.RSS, b.after.RSS = 10<<20, 40<<20
	for _, r := range rows(environment{objects: 10, concurrent: 10}, a, b) {
		switch r.label {
		case "scrape p50, gzip":
			if r.ratio != "0.25" {
				t.Errorf("gzip p50 ratio %s, want 0.25", r.ratio)
			}
		case "cost per sample (p50 / samples), plain":
			if r.a != "10.000 µs" || r.ratio != "1.00" {
				t.Errorf("plain cost per sample %s ratio %s", r.a, r.ratio)
			}
		case "RSS per object (VmRSS / objects)":
			if r.a != "1048576 B" {
				t.Errorf("RSS per object %s", r.a)
			}
		}
	}
}
