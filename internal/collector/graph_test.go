package collector

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// fluxObj is a test object: kind, namespace/name, its Ready status ("" for no
// Ready condition) and its spec in YAML flow style.
func fluxObj(kind, id, ready, spec string) string {
	ns, name, _ := strings.Cut(id, "/")
	doc := fmt.Sprintf("kind: %s\nmetadata: {name: %s, namespace: %s}\nspec: %s\n", kind, name, ns, spec)
	if ready != "" {
		doc += fmt.Sprintf("status: {conditions: [{type: Ready, status: %q, reason: Test}]}\n", ready)
	}
	return doc
}

// statesOf decodes the objects into synced kind states.
func statesOf(t testing.TB, docs ...string) []kube.KindState[*Record] {
	t.Helper()
	byKind := map[string][]*Record{}
	for _, d := range docs {
		kind, rec := decodeYAML(t, d)
		byKind[kind] = append(byKind[kind], rec)
	}
	var out []kube.KindState[*Record]
	for _, k := range slices.Sorted(maps.Keys(byKind)) {
		out = append(out, kube.KindState[*Record]{Kind: kube.Kind{Group: "test.fluxcd.io", Kind: k}, Synced: true, Records: byKind[k]})
	}
	return out
}

// watching is a lookup for caches that watch these kinds in every
// namespace and hold nothing but the snapshot.
func watching(kinds ...string) lookupFunc {
	return func(kind, _, _ string) (bool, bool) { return false, slices.Contains(kinds, kind) }
}

// graphFacts are a graph's results by object, as "Kind ns/name".
type graphFacts struct {
	missing    map[string][]string
	dependents map[string]int
	roots      map[string][]string
}

func keyString(k objectKey) string { return k.kind + " " + k.namespace + "/" + k.name }

func factsOf(g *graph) graphFacts {
	f := graphFacts{missing: map[string][]string{}, dependents: map[string]int{}, roots: map[string][]string{}}
	deps, roots := g.dependents(), g.rootCauses()
	for i, nd := range g.nodes {
		name := keyString(nd.key)
		for _, m := range g.missingOf[i] {
			f.missing[name] = append(f.missing[name], keyString(g.missing[m]))
		}
		if deps[i] > 0 {
			f.dependents[name] = int(deps[i])
		}
		for _, v := range roots[i] {
			f.roots[name] = append(f.roots[name], keyString(g.key(v)))
		}
	}
	for _, l := range f.missing {
		sort.Strings(l)
	}
	for _, l := range f.roots {
		sort.Strings(l)
	}
	return f
}

func TestGraph(t *testing.T) {
	all := watching("GitRepository", "OCIRepository", "HelmRepository", "HelmChart", "Kustomization", "HelmRelease",
		"ImageRepository", "ImagePolicy", "Alert", "Provider", "Receiver")
	cases := []struct {
		name    string
		objects []string
		lookup  lookupFunc
		want    graphFacts
	}{{
		name: "a chain below a failing source: blast radius and one root",
		objects: []string{
			fluxObj("GitRepository", "flux-system/fleet", "False", "{url: x}"),
			fluxObj("Kustomization", "flux-system/crds", "False", "{sourceRef: {kind: GitRepository, name: fleet}}"),
			fluxObj("Kustomization", "apps/controllers", "False", "{sourceRef: {kind: GitRepository, name: fleet, namespace: flux-system}, dependsOn: [{name: crds, namespace: flux-system}]}"),
			fluxObj("Kustomization", "apps/web", "True", "{sourceRef: {kind: GitRepository, name: fleet, namespace: flux-system}, dependsOn: [{name: controllers}]}"),
		},
		lookup: all,
		want: graphFacts{
			dependents: map[string]int{"GitRepository flux-system/fleet": 3, "Kustomization flux-system/crds": 2, "Kustomization apps/controllers": 1},
			roots: map[string][]string{
				"Kustomization flux-system/crds": {"GitRepository flux-system/fleet"},
				"Kustomization apps/controllers": {"GitRepository flux-system/fleet"},
			},
		},
	}, {
		// kustomize-controller applies the last artifact while its source
		// fails to fetch a new one: the Kustomization fails for reasons of
		// its own, and the source is not its root cause.
		name: "a failing source that still has an artifact blocks nothing",
		objects: []string{
			"kind: GitRepository\nmetadata: {name: fleet, namespace: flux-system}\nspec: {url: x}\nstatus: {artifact: {revision: main@sha1:1}, conditions: [{type: Ready, status: \"False\", reason: GitOperationFailed}]}\n",
			fluxObj("Kustomization", "flux-system/apps", "False", "{sourceRef: {kind: GitRepository, name: fleet}}"),
			fluxObj("Kustomization", "flux-system/web", "False", "{sourceRef: {kind: GitRepository, name: fleet}, dependsOn: [{name: apps}]}"),
		},
		lookup: all,
		want: graphFacts{
			dependents: map[string]int{"GitRepository flux-system/fleet": 2, "Kustomization flux-system/apps": 1},
			roots:      map[string][]string{"Kustomization flux-system/web": {"Kustomization flux-system/apps"}},
		},
	}, {
		// helm-controller v1.6.2 helmrelease_controller.go isReady: a chart
		// source that is Stalled, or has not reconciled its current
		// generation, blocks even with an older artifact; one that only
		// fails to fetch, on a reconciled generation, does not.
		name: "a HelmRelease's chart blocks while Stalled or behind its generation, though it has an artifact",
		objects: []string{
			"kind: HelmChart\nmetadata: {name: stalled, namespace: apps, generation: 2}\nspec: {chart: x}\nstatus: {observedGeneration: 2, artifact: {revision: 1.0.0}, conditions: [{type: Ready, status: \"False\", reason: InvalidChartReference}, {type: Stalled, status: \"True\", reason: InvalidChartReference}]}\n",
			"kind: HelmChart\nmetadata: {name: behind, namespace: apps, generation: 3}\nspec: {chart: x}\nstatus: {observedGeneration: 2, artifact: {revision: 1.0.0}, conditions: [{type: Ready, status: \"False\", reason: ChartPullError}]}\n",
			"kind: HelmChart\nmetadata: {name: fetching, namespace: apps, generation: 2}\nspec: {chart: x}\nstatus: {observedGeneration: 2, artifact: {revision: 1.0.0}, conditions: [{type: Ready, status: \"False\", reason: ChartPullError}]}\n",
			fluxObj("HelmRelease", "apps/a", "False", "{chartRef: {kind: HelmChart, name: stalled}}"),
			fluxObj("HelmRelease", "apps/b", "False", "{chartRef: {kind: HelmChart, name: behind}}"),
			fluxObj("HelmRelease", "apps/c", "False", "{chartRef: {kind: HelmChart, name: fetching}}"),
		},
		lookup: all,
		want: graphFacts{
			dependents: map[string]int{"HelmChart apps/stalled": 1, "HelmChart apps/behind": 1, "HelmChart apps/fetching": 1},
			roots: map[string][]string{
				"HelmRelease apps/a": {"HelmChart apps/stalled"},
				"HelmRelease apps/b": {"HelmChart apps/behind"},
			},
		},
	}, {
		name: "a dependsOn that names nothing: missing, and the missing object is the root",
		objects: []string{
			fluxObj("GitRepository", "apps/repo", "True", "{url: x}"),
			fluxObj("HelmRelease", "apps/api", "False", "{chartRef: {kind: OCIRepository, name: charts}, dependsOn: [{name: db}, {name: cache}]}"),
			fluxObj("HelmRelease", "apps/db", "False", "{chartRef: {kind: OCIRepository, name: charts}}"),
			fluxObj("OCIRepository", "apps/charts", "False", "{url: oci://x}"),
		},
		lookup: all,
		want: graphFacts{
			missing:    map[string][]string{"HelmRelease apps/api": {"HelmRelease apps/cache"}},
			dependents: map[string]int{"OCIRepository apps/charts": 2, "HelmRelease apps/db": 1},
			roots: map[string][]string{
				"HelmRelease apps/api": {"HelmRelease apps/cache", "OCIRepository apps/charts"},
				"HelmRelease apps/db":  {"OCIRepository apps/charts"},
			},
		},
	}, {
		name: "a kind or namespace the caches cannot know is unknown, not missing; an object that arrived since is not missing",
		objects: []string{
			fluxObj("Kustomization", "apps/a", "False", "{sourceRef: {kind: Bucket, name: b}, dependsOn: [{name: x, namespace: elsewhere}, {name: late}]}"),
		},
		lookup: func(kind, ns, name string) (bool, bool) {
			switch {
			case kind == "Bucket", ns == "elsewhere":
				return false, false
			case name == "late":
				return true, true
			}
			return false, true
		},
		want: graphFacts{},
	}, {
		name: "a cycle ends: each member is the other's root, and counts it as a dependent",
		objects: []string{
			fluxObj("Kustomization", "apps/a", "False", "{dependsOn: [{name: b}]}"),
			fluxObj("Kustomization", "apps/b", "False", "{dependsOn: [{name: a}]}"),
			fluxObj("Kustomization", "apps/c", "False", "{dependsOn: [{name: b}]}"),
		},
		lookup: all,
		want: graphFacts{
			dependents: map[string]int{"Kustomization apps/a": 2, "Kustomization apps/b": 2},
			roots: map[string][]string{
				"Kustomization apps/a": {"Kustomization apps/b"},
				"Kustomization apps/b": {"Kustomization apps/a"},
				"Kustomization apps/c": {"Kustomization apps/a", "Kustomization apps/b"},
			},
		},
	}, {
		name: "a cycle below a failing source: the source is the root of all",
		objects: []string{
			fluxObj("Kustomization", "apps/a", "False", "{dependsOn: [{name: b}]}"),
			fluxObj("Kustomization", "apps/b", "False", "{dependsOn: [{name: a}], sourceRef: {kind: GitRepository, name: g}}"),
			fluxObj("GitRepository", "apps/g", "False", "{url: x}"),
		},
		lookup: all,
		want: graphFacts{
			dependents: map[string]int{"Kustomization apps/a": 1, "Kustomization apps/b": 1, "GitRepository apps/g": 2},
			roots: map[string][]string{
				"Kustomization apps/a": {"GitRepository apps/g"},
				"Kustomization apps/b": {"GitRepository apps/g"},
			},
		},
	}, {
		name: "depending on itself: its own root, not its own dependent",
		objects: []string{
			fluxObj("Kustomization", "apps/self", "False", "{dependsOn: [{name: self}]}"),
		},
		lookup: all,
		want:   graphFacts{roots: map[string][]string{"Kustomization apps/self": {"Kustomization apps/self"}}},
	}, {
		name: "a Ready object in between stops the walk: its dependents are not blocked by what is behind it",
		objects: []string{
			fluxObj("GitRepository", "apps/g", "False", "{url: x}"),
			fluxObj("Kustomization", "apps/a", "True", "{sourceRef: {kind: GitRepository, name: g}}"),
			fluxObj("Kustomization", "apps/b", "False", "{dependsOn: [{name: a}]}"),
		},
		lookup: all,
		want:   graphFacts{dependents: map[string]int{"GitRepository apps/g": 2, "Kustomization apps/a": 1}},
	}, {
		name: "a diamond counts each dependent once",
		objects: []string{
			fluxObj("OCIRepository", "apps/src", "True", "{url: oci://x}"),
			fluxObj("Kustomization", "apps/left", "True", "{sourceRef: {kind: OCIRepository, name: src}}"),
			fluxObj("Kustomization", "apps/right", "True", "{sourceRef: {kind: OCIRepository, name: src}}"),
			fluxObj("Kustomization", "apps/top", "True", "{sourceRef: {kind: OCIRepository, name: src}, dependsOn: [{name: left}, {name: right}]}"),
		},
		lookup: all,
		want:   graphFacts{dependents: map[string]int{"OCIRepository apps/src": 3, "Kustomization apps/left": 1, "Kustomization apps/right": 1}},
	}, {
		name: "an Alert's event sources and a Receiver's resources do not block; a Provider does, and may be missing",
		objects: []string{
			fluxObj("GitRepository", "ops/g", "False", "{url: x}"),
			fluxObj("Alert", "ops/a", "", "{providerRef: {name: gone}, eventSources: [{kind: GitRepository, name: g}, {kind: Kustomization, name: nope}]}"),
			fluxObj("Receiver", "ops/r", "False", "{resources: [{kind: GitRepository, name: g}]}"),
		},
		lookup: all,
		want: graphFacts{
			missing: map[string][]string{"Alert ops/a": {"Kustomization ops/nope", "Provider ops/gone"}},
			// The Alert is Ready (static), so it has no roots though its
			// Provider is missing.
		},
	}, {
		name: "a chart template's HelmChart and source",
		objects: []string{
			fluxObj("HelmRepository", "flux-system/bitnami", "False", "{url: x}"),
			fluxObj("HelmChart", "flux-system/apps-redis", "False", "{sourceRef: {kind: HelmRepository, name: bitnami}}"),
			"kind: HelmRelease\nmetadata: {name: redis, namespace: apps}\nspec: {chart: {spec: {chart: redis, sourceRef: {kind: HelmRepository, name: bitnami, namespace: flux-system}}}}\n" +
				"status: {helmChart: flux-system/apps-redis, conditions: [{type: Ready, status: \"False\", reason: ArtifactFailed}]}\n",
		},
		lookup: all,
		want: graphFacts{
			dependents: map[string]int{"HelmRepository flux-system/bitnami": 2, "HelmChart flux-system/apps-redis": 1},
			roots: map[string][]string{
				"HelmChart flux-system/apps-redis": {"HelmRepository flux-system/bitnami"},
				"HelmRelease apps/redis":           {"HelmRepository flux-system/bitnami"},
			},
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := factsOf(newGraph(statesOf(t, c.objects...), c.lookup))
			for what, pair := range map[string][2]any{
				"missing":    {got.missing, c.want.missing},
				"dependents": {got.dependents, c.want.dependents},
				"roots":      {got.roots, c.want.roots},
			} {
				if g, w := fmt.Sprint(pair[0]), fmt.Sprint(nonNil(pair[1])); g != w {
					t.Errorf("%s\n got %s\nwant %s", what, g, w)
				}
			}
		})
	}
}

// nonNil prints a nil map of the want side as the empty map got has.
func nonNil(v any) any {
	switch m := v.(type) {
	case map[string][]string:
		if m == nil {
			return map[string][]string{}
		}
	case map[string]int:
		if m == nil {
			return map[string]int{}
		}
	}
	return v
}

// TestGraphLongCycle: a cycle through every object ends, and each object
// counts all the others as dependents.
func TestGraphLongCycle(t *testing.T) {
	const n = 300
	var docs []string
	for i := range n {
		docs = append(docs, fluxObj("Kustomization", fmt.Sprintf("apps/k%d", i), "False", fmt.Sprintf("{dependsOn: [{name: k%d}]}", (i+1)%n)))
	}
	g := newGraph(statesOf(t, docs...), watching("Kustomization"))
	for i, d := range g.dependents() {
		if d != n-1 {
			t.Fatalf("%v: %d dependents, want %d", g.nodes[i].key, d, n-1)
		}
	}
	for i, r := range g.rootCauses() {
		if len(r) != n-1 {
			t.Fatalf("%v: %d roots, want the %d others", g.nodes[i].key, len(r), n-1)
		}
	}
}

// TestGraphExposition: the graph's records render the families as the
// metrics reference documents them, and the fast path writes what
// client_golang writes for them.
func TestGraphExposition(t *testing.T) {
	states := statesOf(t,
		fluxObj("OCIRepository", "apps/charts", "False", "{url: oci://x}"),
		fluxObj("HelmRelease", "apps/api", "False", "{chartRef: {kind: OCIRepository, name: charts}, dependsOn: [{name: cache}]}"),
	)
	records := newGraph(states, watching("HelmRelease", "OCIRepository")).render(nil)
	want := `# HELP flux_resource_dependency_missing ` + dependencyMissingFamily.help + `
# TYPE flux_resource_dependency_missing gauge
flux_resource_dependency_missing{dependency_kind="HelmRelease",dependency_name="cache",dependency_namespace="apps",exported_namespace="apps",kind="HelmRelease",name="api"} 1
# HELP flux_resource_dependents ` + dependentsFamily.help + `
# TYPE flux_resource_dependents gauge
flux_resource_dependents{exported_namespace="apps",kind="HelmRelease",name="api"} 0
flux_resource_dependents{exported_namespace="apps",kind="OCIRepository",name="charts"} 1
# HELP flux_resource_root_cause_info ` + rootCauseFamily.help + `
# TYPE flux_resource_root_cause_info gauge
flux_resource_root_cause_info{exported_namespace="apps",kind="HelmRelease",name="api",root_kind="HelmRelease",root_name="cache",root_namespace="apps"} 1
flux_resource_root_cause_info{exported_namespace="apps",kind="HelmRelease",name="api",root_kind="OCIRepository",root_name="charts",root_namespace="apps"} 1
`
	if err := testutil.CollectAndCompare(recordsCollector(records), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	var all []*Record
	for _, ks := range states {
		for _, o := range ks.Records {
			all = append(all, o)
		}
	}
	for _, f := range exportedFormats {
		if err := sameAsClientGolang(append(all, records...), f); err != nil {
			t.Error(err)
		}
	}
}

// fakeFlux is a FluxState that may be sharded, and
// judges absent objects as kube.Watcher.Exists does for watched kinds.
type fakeFlux struct {
	states   []kube.KindState[*Record]
	sharding kube.Sharding
}

func (f *fakeFlux) State() []kube.KindState[*Record] { return f.states }
func (f *fakeFlux) Sharding() kube.Sharding          { return f.sharding }
func (f *fakeFlux) FluxVersion() string              { return "" }
func (f *fakeFlux) Exists(kind, _, _ string) (exists, watched bool) {
	for _, ks := range f.states {
		if ks.Kind.Kind == kind {
			return !ks.Synced, true // an unsynced cache cannot tell
		}
	}
	return false, false
}

// scrapeText runs one scrape as the HTTP handler does and returns the
// per-object text, after checking the graph's series against the oracle:
// the same records parsed back and encoded by client_golang.
func scrapeText(t *testing.T, e *Exporter) string {
	t.Helper()
	c, write := e.Scrape(context.Background())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	w := bufio.NewWriter(&b)
	if err := write(w, exportedFormats[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, _ := e.collectors["resources"].(*Resources)
	if r == nil || r.graph == nil {
		return b.String()
	}
	snapshot := &scrapeState{states: r.state.State(), graph: r.graph.cached}
	oracle := prometheus.NewPedanticRegistry()
	oracle.MustRegister(recordsCollector(snapshot.records()))
	mfs, err := oracle.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&sb, mf); err != nil {
			t.Fatal(err)
		}
	}
	slow := sb.String()
	for _, fam := range []string{"flux_resource_dependency_info", "flux_resource_dependency_missing", "flux_resource_dependents", "flux_resource_root_cause_info"} {
		if got, want := linesOf(b.String(), fam), linesOf(slow, fam); !slices.Equal(got, want) {
			t.Errorf("%s: the writer writes\n%s\nthe oracle\n%s", fam, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	return b.String()
}

func linesOf(text, family string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, family+"{") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

func newTestExporter(t *testing.T, flux FluxState) (*Exporter, *graphCache) {
	t.Helper()
	return newTestExporterWith(t, NewDecoder(everyFamily()), flux)
}

// newTestExporterWith is newTestExporter with the Decoder d.
func newTestExporterWith(t *testing.T, d *Decoder, flux FluxState) (*Exporter, *graphCache) {
	t.Helper()
	r := &Resources{state: flux, delivery: d.delivery, graph: &graphCache{logger: Deps{}.logger(), on: d.on}}
	return &Exporter{collectors: map[string]Collector{"resources": r}, logger: Deps{}.logger()}, r.graph
}

// TestGraphIsComputedOncePerChange: scrapes of unchanged caches reuse the
// graph, nor do updates of what the graph does not read; a change of what
// it reads (an object, its Ready, its references, a kind that syncs)
// recomputes it.
func TestGraphIsComputedOncePerChange(t *testing.T) {
	flux := &fakeFlux{states: statesOf(t,
		fluxObj("GitRepository", "apps/g", "False", "{url: x}"),
		fluxObj("Kustomization", "apps/k", "False", "{sourceRef: {kind: GitRepository, name: g}}"),
	)}
	e, cache := newTestExporter(t, flux)
	first := scrapeText(t, e) // checked against the oracle
	for range 5 {
		if got := scrapeText(t, e); got != first {
			t.Fatalf("an unchanged cache scraped differently:\n%s\n---\n%s", first, got)
		}
	}
	if cache.computed != 1 {
		t.Fatalf("graph computed %d times over 12 scrapes of unchanged caches, want 1", cache.computed)
	}
	if !strings.Contains(first, `flux_resource_root_cause_info{exported_namespace="apps",kind="Kustomization",name="k",root_kind="GitRepository",root_name="g",root_namespace="apps"} 1`) {
		t.Errorf("no root cause in\n%s", first)
	}

	// An update that changes nothing the graph reads (a reconcile moves
	// timestamps and revisions): the graph is reused.
	flux.states = statesOf(t,
		fluxObj("GitRepository", "apps/g", "False", "{url: https://example.com/other.git, interval: 5m}"),
		fluxObj("Kustomization", "apps/k", "False", "{sourceRef: {kind: GitRepository, name: g}, path: ./other}"),
	)
	scrapeText(t, e)
	if cache.computed != 1 {
		t.Fatalf("graph computed %d times after updates it does not read, want 1", cache.computed)
	}

	// The GitRepository is deleted: one event, one recomputation, and its
	// series and what pointed at it follow.
	flux.states = statesOf(t, fluxObj("Kustomization", "apps/k", "False", "{sourceRef: {kind: GitRepository, name: g}}"))
	flux.states = append(flux.states, kube.KindState[*Record]{Kind: kube.Kind{Group: "test.fluxcd.io", Kind: "GitRepository"}, Synced: true})
	text := scrapeText(t, e)
	if cache.computed != 2 {
		t.Fatalf("graph computed %d times after one change, want 2", cache.computed)
	}
	for _, want := range []string{
		`flux_resource_dependency_missing{dependency_kind="GitRepository",dependency_name="g",dependency_namespace="apps",exported_namespace="apps",kind="Kustomization",name="k"} 1`,
		`flux_resource_root_cause_info{exported_namespace="apps",kind="Kustomization",name="k",root_kind="GitRepository",root_name="g",root_namespace="apps"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %s in\n%s", want, text)
		}
	}
	if strings.Contains(text, `kind="GitRepository",name="g"`) {
		t.Errorf("series left behind for the deleted GitRepository:\n%s", text)
	}

	// A kind's cache syncs without an event of its own.
	flux.states[1].Synced = false
	scrapeText(t, e)
	flux.states[1].Synced = true
	scrapeText(t, e)
	if cache.computed != 4 {
		t.Errorf("graph computed %d times after two sync changes, want 4", cache.computed)
	}
}

// TestGraphSharded: a shard reports its objects' references and nothing
// computed across objects, which it cannot see whole.
func TestGraphSharded(t *testing.T) {
	flux := &fakeFlux{sharding: kube.Sharding{Shard: 1, Total: 2}, states: statesOf(t,
		fluxObj("Kustomization", "apps/k", "False", "{sourceRef: {kind: GitRepository, name: elsewhere}}"),
		fluxObj("GitRepository", "apps/g", "False", "{url: x}"),
	)}
	e, cache := newTestExporter(t, flux)
	text := scrapeText(t, e)
	if !strings.Contains(text, `flux_resource_dependency_info{dependency_kind="GitRepository",dependency_name="elsewhere"`) {
		t.Errorf("a shard lost its objects' references:\n%s", text)
	}
	for _, fam := range []string{"flux_resource_dependency_missing", "flux_resource_dependents", "flux_resource_root_cause_info"} {
		if strings.Contains(text, fam) {
			t.Errorf("a shard reports %s:\n%s", fam, text)
		}
	}
	if cache.computed != 0 {
		t.Errorf("a shard computed the graph %d times", cache.computed)
	}
	flux.sharding = kube.Sharding{}
	if text := scrapeText(t, e); !strings.Contains(text, "flux_resource_dependency_missing{") {
		t.Errorf("unsharded, no missing reference:\n%s", text)
	}
}

// TestGraphFiltered: with every graph family filtered out, nothing is
// computed.
func TestGraphFiltered(t *testing.T) {
	f, err := NewMetricFilter(nil, []string{"^flux_resource_(dependency_missing|dependents|root_cause_info)$"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, cache := newTestExporterWith(t, NewDecoder(DecoderOptions{Filter: f}), &fakeFlux{states: statesOf(t, fluxObj("Kustomization", "apps/k", "False", "{dependsOn: [{name: x}]}"))})
	if text := scrapeText(t, e); strings.Contains(text, "flux_resource_dependents") || cache.computed != 0 {
		t.Errorf("filtered graph families computed %d times:\n%s", cache.computed, text)
	}
}

// syntheticFleet decodes n objects shaped as a fleet: per app, a
// GitRepository, four layered Kustomizations, a HelmRepository, HelmChart
// and HelmRelease that depends on another app's, an ImageRepository and
// ImagePolicy, and an Alert per namespace; about one object in eight fails.
func syntheticFleet(tb testing.TB, n int) []kube.KindState[*Record] {
	tb.Helper()
	var docs []string
	ready := func(i int) string {
		if i%8 == 0 {
			return "False"
		}
		return "True"
	}
	for app := 0; len(docs) < n; app++ {
		ns := fmt.Sprintf("team-%d", app%40)
		a := fmt.Sprintf("app-%d", app)
		docs = append(docs, fluxObj("GitRepository", ns+"/"+a, ready(app), "{url: x}"))
		for l, layer := range []string{"crds", "controllers", "configs", "apps"} {
			spec := fmt.Sprintf("{sourceRef: {kind: GitRepository, name: %s}", a)
			if l > 0 {
				spec += fmt.Sprintf(", dependsOn: [{name: %s-%s}]", a, []string{"crds", "controllers", "configs"}[l-1])
			}
			docs = append(docs, fluxObj("Kustomization", ns+"/"+a+"-"+layer, ready(app+l), spec+"}"))
		}
		docs = append(docs,
			fluxObj("HelmRepository", ns+"/"+a, "True", "{url: x}"),
			fluxObj("HelmChart", ns+"/"+ns+"-"+a, ready(app+5), fmt.Sprintf("{sourceRef: {kind: HelmRepository, name: %s}}", a)),
			fmt.Sprintf("kind: HelmRelease\nmetadata: {name: %[1]s, namespace: %[2]s}\nspec: {dependsOn: [{name: app-%[3]d, namespace: team-%[4]d}], chart: {spec: {chart: c, sourceRef: {kind: HelmRepository, name: %[1]s}}}}\nstatus: {helmChart: %[2]s/%[2]s-%[1]s, conditions: [{type: Ready, status: %[5]q}]}\n",
				a, ns, (app+1)%(n/11+1), (app+1)%40, ready(app+6)),
			fluxObj("ImageRepository", ns+"/"+a, "True", "{image: x}"),
			fluxObj("ImagePolicy", ns+"/"+a, ready(app+7), fmt.Sprintf("{imageRepositoryRef: {name: %s}}", a)),
		)
		if app < 40 {
			docs = append(docs, fluxObj("Alert", ns+"/on-call", "", "{providerRef: {name: slack}, eventSources: [{kind: Kustomization, name: \"*\"}]}"))
		}
	}
	return statesOf(tb, docs[:n]...)
}

// BenchmarkGraphRecompute measures what a change of the caches costs with
// 10,000 objects: linking the records, counting dependents, finding root
// causes and rendering the series. A scrape of unchanged caches does none
// of it (BenchmarkGraphUnchanged).
func BenchmarkGraphRecompute(b *testing.B) {
	states := syntheticFleet(b, 10000)
	lookup := lookupIn(states)
	b.ReportAllocs()
	var records []*Record
	for b.Loop() {
		records = newGraph(states, lookup).render(nil)
	}
	b.ReportMetric(float64(len(records)), "records")
}

// BenchmarkGraphUnchanged is the graph's share of a scrape of unchanged
// caches at 10,000 objects: comparing the state's key.
func BenchmarkGraphUnchanged(b *testing.B) {
	flux := &fakeFlux{states: syntheticFleet(b, 10000)}
	cache := &graphCache{logger: Deps{}.logger()}
	lookup := lookupIn(flux.states)
	sc := &scrapeState{}
	sc.objects(flux)
	cache.records(sc, lookup)
	b.ReportAllocs()
	for b.Loop() {
		sc := &scrapeState{}
		sc.objects(flux)
		cache.records(sc, lookup)
	}
	if cache.computed != 1 {
		b.Fatalf("computed %d times", cache.computed)
	}
}

// TestGraphRecordPerObject: every object gets a graph record, since each
// has flux_resource_dependents. How long a recomputation takes is
// BenchmarkGraphRecompute's to measure.
func TestGraphRecordPerObject(t *testing.T) {
	states := syntheticFleet(t, 1000)
	if records := newGraph(states, lookupIn(states)).render(nil); len(records) != 1000 {
		t.Errorf("%d graph records for 1,000 objects, want one each", len(records))
	}
}

// lookupIn judges absent objects from the snapshot alone, for tests of the
// graph alone: a kind that is synced in it is watched in every namespace.
func lookupIn(states []kube.KindState[*Record]) lookupFunc {
	synced := map[string]bool{}
	for _, ks := range states {
		if ks.Synced {
			synced[ks.Kind.Kind] = true
		}
	}
	return func(kind, _, _ string) (bool, bool) { return false, synced[kind] }
}
