package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"

	"github.com/flux-exporter/flux_exporter/collector"
	"github.com/flux-exporter/flux_exporter/events"
)

var update = flag.Bool("update", false, "rewrite docs/metrics.md's generated table from the code")

const (
	metricsDoc = "docs/metrics.md"
	beginMark  = "<!-- BEGIN GENERATED METRICS TABLE: go test -run TestMetricsReference -update -->"
	endMark    = "<!-- END GENERATED METRICS TABLE -->"
)

// summaries are the families emitted as summaries; a descriptor does not
// carry its type, and every other family is typed by its name.
var summaries = map[string]bool{"flux_controller_reconcile_duration_seconds": true}

var descRE = regexp.MustCompile(`fqName: "([^"]+)", help: "((?:[^"\\]|\\.)*)".*variableLabels: \{([^}]*)\}`)

// TestMetricsReference fails when docs/metrics.md and the families the code
// can emit disagree, in either direction.
func TestMetricsReference(t *testing.T) {
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := strings.Index(string(doc), beginMark), strings.Index(string(doc), endMark)
	if begin < 0 || end < begin {
		t.Fatalf("%s lacks the generated table markers", metricsDoc)
	}
	want := metricsTable(t)
	got := string(doc[begin+len(beginMark) : end])
	if got == want {
		return
	}
	if *update {
		out := string(doc[:begin+len(beginMark)]) + want + string(doc[end:])
		if err := os.WriteFile(metricsDoc, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date with the code; run go test -run TestMetricsReference -update .\n--- doc\n%s\n--- code\n%s", metricsDoc, got, want)
}

// allDescs gathers the descriptors of everything the binary registers.
func allDescs(t *testing.T) []*prometheus.Desc {
	out := collector.Descs()
	receiver, err := events.New(events.Config{AllowUnsigned: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []prometheus.Collector{receiver, versioncollector.NewCollector(program)} {
		ch := make(chan *prometheus.Desc, 64)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			out = append(out, d)
		}
	}
	return out
}

func metricsTable(t *testing.T) string {
	rows := map[string]string{}
	for _, d := range allDescs(t) {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read descriptor %s", d)
		}
		name, help, labels := m[1], strings.ReplaceAll(m[2], `\"`, `"`), m[3]
		typ := "gauge"
		switch {
		case strings.HasSuffix(name, "_total"):
			typ = "counter"
		case summaries[name]:
			typ = "summary"
		}
		var ls []string
		for _, l := range strings.Split(labels, ",") {
			if l != "" {
				ls = append(ls, "`"+l+"`")
			}
		}
		rows[name] = fmt.Sprintf("| `%s` | %s | %s | %s |", name, typ, strings.Join(ls, ", "), strings.ReplaceAll(help, "|", `\|`))
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("\n| metric | type | labels | help |\n|---|---|---|---|\n")
	for _, n := range names {
		b.WriteString(rows[n] + "\n")
	}
	return b.String()
}
