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

	"github.com/flux-exporter/flux_exporter/internal/catalog"
	"github.com/flux-exporter/flux_exporter/internal/collector"
	"github.com/flux-exporter/flux_exporter/internal/dispatch"
	"github.com/flux-exporter/flux_exporter/internal/events"
	"github.com/flux-exporter/flux_exporter/internal/kube"
)

var update = flag.Bool("update", false, "rewrite docs/metrics.md's generated table from the code")

const (
	metricsDoc = "docs/metrics.md"
	beginMark  = "<!-- BEGIN GENERATED METRICS TABLE: go test -run TestMetricsReference -update -->"
	endMark    = "<!-- END GENERATED METRICS TABLE -->"
)

// descRE reads a client_golang descriptor: only for the version
// collector, which client_golang defines; the exporter's own families are
// in the catalogue.
var descRE = regexp.MustCompile(`fqName: "([^"]+)", help: "((?:[^"\\]|\\.)*)".*variableLabels: \{([^}]*)\}`)

const (
	sourcesBeginMark = "<!-- BEGIN GENERATED LABEL SOURCES TABLE: go test -run TestMetricsReference -update -->"
	sourcesEndMark   = "<!-- END GENERATED LABEL SOURCES TABLE -->"
)

// TestMetricsReference fails when docs/metrics.md and the families the code
// can emit, or the per-kind label sources of its kind table, disagree.
func TestMetricsReference(t *testing.T) {
	checkGenerated(t, metricsDoc, beginMark, endMark, metricsTable(t), "TestMetricsReference")
	checkGenerated(t, metricsDoc, sourcesBeginMark, sourcesEndMark, labelSourcesTable(), "TestMetricsReference")
}

// labelSourcesTable renders collector.LabelSources, one row per kind.
func labelSourcesTable() string {
	var b strings.Builder
	b.WriteString("\n| kind | " + strings.Join(collector.InfoLabels[:len(collector.InfoLabels)-1], " | ") + " | no status (ready `True`) |\n")
	b.WriteString(strings.Repeat("|---", len(collector.InfoLabels)+1) + "|\n")
	row := map[string][]string{}
	var kinds []string
	for _, s := range collector.LabelSources() {
		if _, ok := row[s.Kind]; !ok {
			kinds = append(kinds, s.Kind)
		}
		row[s.Kind] = append(row[s.Kind], strings.ReplaceAll(s.Source, "|", `\|`))
	}
	for _, k := range kinds {
		b.WriteString("| " + k + " | " + strings.Join(row[k], " | ") + " |\n")
	}
	return b.String()
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

// allFamilies gathers the catalogue of everything the binary registers:
// the collectors', the dispatch failures', the events receiver's and
// client_golang's build information.
func allFamilies(t *testing.T) []catalog.Family {
	out := append(append(collector.Families(), dispatch.Families()...), events.Families()...)
	ch := make(chan *prometheus.Desc, 4)
	versioncollector.NewCollector(program).Describe(ch)
	close(ch)
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read descriptor %s", d)
		}
		out = append(out, catalog.Family{Name: m[1], Type: catalog.Gauge, Help: strings.ReplaceAll(m[2], `\"`, `"`), Labels: strings.Split(m[3], ",")})
	}
	return out
}

func metricsTable(t *testing.T) string {
	rows := map[string]string{}
	for _, f := range allFamilies(t) {
		var ls []string
		for _, l := range f.Labels {
			if l != "" {
				ls = append(ls, "`"+l+"`")
			}
		}
		def := "on"
		if f.OptIn {
			def = "opt-in"
		}
		rows[f.Name] = fmt.Sprintf("| `%s` | %s | %s | %s | %s |", f.Name, f.Type, def, strings.Join(ls, ", "), strings.ReplaceAll(f.Help, "|", `\|`))
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("\n| metric | type | default | labels | help |\n|---|---|---|---|---|\n")
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

// runStderr runs the command line and returns its exit code and what it
// wrote to standard error.
func runStderr(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	code := run(args)
	os.Stderr = saved
	w.Close()
	return code, <-out
}

// TestShardingFlags checks that bad sharding flags stop the exporter with
// exit 2 and one line that names the flag, before it contacts any API
// server, and that good ones get past flag checking (exit 1 at the
// kubeconfig that does not exist).
func TestShardingFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" for flags that are accepted
	}{
		{[]string{"--shard=3", "--total-shards=3"}, "--shard=3 is outside 0..2"},
		{[]string{"--shard=1"}, "--shard=1 is outside 0..0"},
		{[]string{"--total-shards=0"}, "--total-shards=0"},
		{[]string{"--shard=-1", "--total-shards=2"}, "--shard=-1"},
		{[]string{"--pod=flux-exporter-0"}, "--pod-namespace"},
		{[]string{"--pod-namespace=monitoring"}, "--pod="},
		{[]string{"--pod=flux-exporter-0", "--pod-namespace=monitoring", "--total-shards=3"}, "drop --shard and --total-shards"},
		{[]string{"--pod=flux-exporter-0", "--pod-namespace=monitoring", "--shard=0"}, "drop --shard and --total-shards"},
		{[]string{"--shard=2", "--total-shards=3"}, ""},
		{[]string{"--total-shards=1"}, ""},
		{[]string{"--pod=flux-exporter-0", "--pod-namespace=monitoring"}, ""},
	} {
		code, stderr := runStderr(t, append(tc.args, "--kube.config=/nonexistent")...)
		switch {
		case tc.want == "" && code != 1:
			t.Errorf("%v: exit %d, want 1 (past the flags, at the kubeconfig):\n%s", tc.args, code, stderr)
		case tc.want != "" && (code != 2 || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0):
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line naming %q", tc.args, code, stderr, tc.want)
		}
	}
}

// TestMetadataAllowlistFlags checks that a bad --metric-labels-allowlist or
// --metric-annotations-allowlist stops the exporter with exit 2 and one
// line naming the flag, before it contacts any API server, and that good
// ones, --compat.gotk-resource-info among them, get past flag checking.
func TestMetadataAllowlistFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" for flags that are accepted
	}{
		{[]string{"--metric-labels-allowlist=kustomizations=team"}, "--metric-labels-allowlist="},
		{[]string{"--metric-labels-allowlist=Kustomization=[team]"}, "name its resource"},
		{[]string{"--metric-annotations-allowlist=kustomizations=[a,,b]"}, "--metric-annotations-allowlist="},
		{[]string{"--metric-labels-allowlist=kustomizations=[team,app.kubernetes.io/part-of],*=[team]", "--metric-annotations-allowlist=*=[team.example.com/*]", "--compat.gotk-resource-info"}, ""},
		{[]string{"--metric-labels-allowlist=*=[*]"}, ""},
	} {
		code, stderr := runStderr(t, append(tc.args, "--kube.config=/nonexistent")...)
		switch {
		case tc.want == "" && code != 1:
			t.Errorf("%v: exit %d, want 1 (past the flags, at the kubeconfig):\n%s", tc.args, code, stderr)
		case tc.want != "" && (code != 2 || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0):
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line naming %q", tc.args, code, stderr, tc.want)
		}
	}
}
