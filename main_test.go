package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"go.yaml.in/yaml/v3"

	"github.com/flux-exporter/flux_exporter/collector"
	"github.com/flux-exporter/flux_exporter/events"
	"github.com/flux-exporter/flux_exporter/kube"
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
	checkGenerated(t, metricsDoc, beginMark, endMark, metricsTable(t), "TestMetricsReference")
}

// checkGenerated compares the part of path between the markers with want,
// and with -update rewrites it.
func checkGenerated(t *testing.T, path, begin, end, want, test string) {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, e := strings.Index(string(doc), begin), strings.Index(string(doc), end)
	if b < 0 || e < b {
		t.Fatalf("%s lacks the generated section markers %q and %q", path, begin, end)
	}
	got := string(doc[b+len(begin) : e])
	if got == want {
		return
	}
	if *update {
		out := string(doc[:b+len(begin)]) + want + string(doc[e:])
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date with the code; run go test -run %s -update .\n--- file\n%s\n--- code\n%s", path, test, got, want)
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

const (
	readme         = "README.md"
	flagsBeginMark = "<!-- BEGIN GENERATED FLAGS TABLE: go test -run TestFlagsReference -update -->"
	flagsEndMark   = "<!-- END GENERATED FLAGS TABLE -->"
)

// TestFlagsReference fails when the README's flag table and the command
// line disagree.
func TestFlagsReference(t *testing.T) {
	app, _ := newApp()
	var b strings.Builder
	b.WriteString("\n| flag | default | description |\n|---|---|---|\n")
	for _, f := range app.Model().Flags {
		if f.Hidden || f.Name == "help" || f.Name == "version" {
			continue
		}
		name := "--" + f.Name
		if f.IsBoolFlag() {
			name = "--[no-]" + f.Name
		}
		def := strings.Join(f.Default, ", ")
		if def != "" {
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", name, def, strings.ReplaceAll(f.Help, "|", `\|`))
	}
	checkGenerated(t, readme, flagsBeginMark, flagsEndMark, b.String(), "TestFlagsReference")
}

// TestAPIGroupsMatchTheRBAC keeps one list of API groups: the default of
// --flux.api-groups is what the chart's value and deploy/'s ClusterRole
// grant, so the exporter never watches a group its install forbids, nor is
// granted one it does not watch. sandbox/e2e/install_test.go checks the
// rendered grants against the same list.
func TestAPIGroupsMatchTheRBAC(t *testing.T) {
	app, _ := newApp()
	var flagDefault []string
	for _, f := range app.Model().Flags {
		if f.Name == "flux.api-groups" {
			flagDefault = strings.Split(strings.Join(f.Default, ","), ",")
		}
	}
	if !slices.Equal(flagDefault, kube.DefaultAPIGroups) {
		t.Fatalf("--flux.api-groups defaults to %v, kube.DefaultAPIGroups is %v", flagDefault, kube.DefaultAPIGroups)
	}

	var values struct {
		Flux struct {
			APIGroups []string `yaml:"apiGroups"`
		}
	}
	if err := yaml.Unmarshal(readFile(t, "charts/flux-exporter/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(values.Flux.APIGroups, kube.DefaultAPIGroups) {
		t.Errorf("charts/flux-exporter/values.yaml flux.apiGroups is %v, the flag default is %v", values.Flux.APIGroups, kube.DefaultAPIGroups)
	}
	// The chart grants and passes the value, not a copy of it.
	for file, want := range map[string]string{
		"charts/flux-exporter/templates/rbac.yaml":    "toYaml .Values.flux.apiGroups",
		"charts/flux-exporter/templates/_helpers.tpl": `"--flux.api-groups=%s" (join "," $v.flux.apiGroups)`,
	} {
		if !strings.Contains(string(readFile(t, file)), want) {
			t.Errorf("%s no longer uses %s", file, want)
		}
	}

	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, "deploy/rbac.yaml")))
	var granted [][]string
	for {
		var doc struct {
			Kind  string
			Rules []struct {
				APIGroups []string `yaml:"apiGroups"`
				Resources []string
			}
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		for _, r := range doc.Rules {
			if doc.Kind == "ClusterRole" && slices.Equal(r.Resources, []string{"*"}) {
				granted = append(granted, r.APIGroups)
			}
		}
	}
	if len(granted) != 1 || !slices.Equal(granted[0], kube.DefaultAPIGroups) {
		t.Errorf("deploy/rbac.yaml's ClusterRole grants every resource of %v, the flag default is %v", granted, kube.DefaultAPIGroups)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBadAPIGroupsExit2 checks that a bad --flux.api-groups stops the
// exporter before it contacts any API server.
func TestBadAPIGroupsExit2(t *testing.T) {
	for _, v := range []string{"", "a.io,,b.io", "Source.toolkit.fluxcd.io", "source"} {
		if code := run([]string{"--flux.api-groups=" + v, "--kube.config=/nonexistent"}); code != 2 {
			t.Errorf("--flux.api-groups=%q: exit %d, want 2", v, code)
		}
	}
}
