package e2e

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

// graphFleet holds, as every fleet of its size does, the dependency shapes
// of sandbox/fleet/dependencies.go in its first two namespaces.
var graphFleet = fleet.Options{Seed: 12, Objects: 60, Namespaces: 3}

// depEdge is one reference from an object to another.
type depEdge struct {
	from, to objID
	relation string
}

func (e depEdge) String() string {
	return fmt.Sprintf("%s %s/%s -%s-> %s %s/%s", e.from.kind, e.from.namespace, e.from.name, e.relation, e.to.kind, e.to.namespace, e.to.name)
}

// referencesOf restates docs/flux-semantics.md, rule 10, over an object as
// the API server returns it, independently of the exporter's table: each
// field, its kind, and the namespace it leaves to the object.
func referencesOf(u *unstructured.Unstructured) []depEdge {
	self := idOf(u)
	var out []depEdge
	add := func(kind, ns, name, relation string) {
		if name == "" || name == "*" || kind == "" {
			return
		}
		if ns == "" {
			ns = self.namespace
		}
		e := depEdge{from: self, to: objID{kind, ns, name}, relation: relation}
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	obj := func(path ...string) map[string]any { m, _, _ := unstructured.NestedMap(u.Object, path...); return m }
	list := func(path ...string) []map[string]any {
		l, _, _ := unstructured.NestedSlice(u.Object, path...)
		var out []map[string]any
		for _, e := range l {
			if m, ok := e.(map[string]any); ok {
				out = append(out, m)
			}
		}
		return out
	}
	// A reference with a namespace field; kind given, or read from it.
	crossNS := func(m map[string]any, kind, relation string) {
		if m == nil {
			return
		}
		if kind == "" {
			kind = str(m, "kind")
		}
		add(kind, str(m, "namespace"), str(m, "name"), relation)
	}
	switch self.kind {
	case "Kustomization", "HelmRelease":
		for _, d := range list("spec", "dependsOn") {
			crossNS(d, self.kind, "depends_on")
		}
	}
	switch self.kind {
	case "Kustomization":
		crossNS(obj("spec", "sourceRef"), "", "source")
	case "HelmRelease":
		crossNS(obj("spec", "chartRef"), "", "chart")
		crossNS(obj("spec", "chart", "spec", "sourceRef"), "", "source")
		if hc, _, _ := unstructured.NestedString(u.Object, "status", "helmChart"); hc != "" {
			ns, name, ok := strings.Cut(hc, "/")
			if !ok {
				ns, name = "", hc
			}
			add("HelmChart", ns, name, "chart")
		}
	case "HelmChart":
		if m := obj("spec", "sourceRef"); m != nil {
			add(str(m, "kind"), "", str(m, "name"), "source") // always local
		}
	case "GitRepository":
		for _, inc := range list("spec", "include") {
			if r, ok := inc["repository"].(map[string]any); ok {
				add("GitRepository", "", str(r, "name"), "include")
			}
		}
	case "ExternalArtifact":
		crossNS(obj("spec", "sourceRef"), "", "source")
	case "ImagePolicy":
		crossNS(obj("spec", "imageRepositoryRef"), "ImageRepository", "image_repository")
	case "ImageUpdateAutomation":
		if m := obj("spec", "sourceRef"); m != nil {
			kind := str(m, "kind")
			if kind == "" {
				kind = "GitRepository"
			}
			crossNS(m, kind, "source")
		}
	case "Alert":
		if m := obj("spec", "providerRef"); m != nil {
			add("Provider", "", str(m, "name"), "provider")
		}
		for _, s := range list("spec", "eventSources") {
			crossNS(s, "", "event_source")
		}
	case "Receiver":
		for _, r := range list("spec", "resources") {
			crossNS(r, "", "resource")
		}
	}
	return out
}

// expectedGraph is what an unsharded exporter must report for the listed
// objects: every reference, and those to objects of a listed (watched)
// kind that the server does not have.
func expectedGraph(listed map[string][]unstructured.Unstructured) (edges, missing map[depEdge]bool) {
	have := map[objID]bool{}
	for _, objs := range listed {
		for i := range objs {
			have[idOf(&objs[i])] = true
		}
	}
	edges, missing = map[depEdge]bool{}, map[depEdge]bool{}
	for _, objs := range listed {
		for i := range objs {
			for _, e := range referencesOf(&objs[i]) {
				edges[e] = true
				if _, watched := listed[e.to.kind]; watched && !have[e.to] {
					missing[depEdge{from: e.from, to: e.to}] = true
				}
			}
		}
	}
	return edges, missing
}

// scrapedEdges reads flux_resource_dependency_info (relation set) or
// flux_resource_dependency_missing (relation empty).
func scrapedEdges(s scrape, family string) map[depEdge]bool {
	out := map[depEdge]bool{}
	for _, m := range s.find(family, nil) {
		l := labels(m)
		out[depEdge{
			from:     objID{l["kind"], l["exported_namespace"], l["name"]},
			to:       objID{l["dependency_kind"], l["dependency_namespace"], l["dependency_name"]},
			relation: l["relation"],
		}] = true
	}
	return out
}

// diffEdges says what one set has that the other lacks.
func diffEdges(got, want map[depEdge]bool) error {
	var problems []string
	for e := range want {
		if !got[e] {
			problems = append(problems, "missing "+e.String())
		}
	}
	for e := range got {
		if !want[e] {
			problems = append(problems, "unexpected "+e.String())
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%d edges scraped, %d expected:\n%s", len(got), len(want), strings.Join(problems, "\n"))
	}
	return nil
}

// graphState is what a scrape says of some objects: their dependents and
// their roots, as "Kind ns/name".
type graphState struct {
	dependents map[objID]float64
	roots      map[objID][]string
}

func graphOf(s scrape) graphState {
	g := graphState{dependents: map[objID]float64{}, roots: map[objID][]string{}}
	for _, m := range s.find("flux_resource_dependents", nil) {
		l := labels(m)
		g.dependents[objID{l["kind"], l["exported_namespace"], l["name"]}] = m.GetGauge().GetValue()
	}
	for _, m := range s.find("flux_resource_root_cause_info", nil) {
		l := labels(m)
		id := objID{l["kind"], l["exported_namespace"], l["name"]}
		g.roots[id] = append(g.roots[id], l["root_kind"]+" "+l["root_namespace"]+"/"+l["root_name"])
	}
	for _, r := range g.roots {
		sort.Strings(r)
	}
	return g
}

// TestDependencyGraph runs the exporter against a fleet made for the
// dependency graph and holds its series to the objects on the server: the
// references read independently from the objects, the missing one, the
// blast radius and root causes of a known chain, and how they follow the
// cache as objects come and go, leaving nothing behind. A sharded replica
// reports only its own objects' references.
func TestDependencyGraph(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	f, err := fleet.Generate(graphFleet)
	if err != nil {
		t.Fatal(err)
	}
	if err := fleet.Apply(t.Context(), c.srv.RESTConfig(), f); err != nil {
		t.Fatal(err)
	}
	ns, other := f.Namespaces[0], f.Namespaces[1]
	var (
		manifests = objID{"OCIRepository", ns, "platform"}
		charts    = objID{"OCIRepository", ns, "platform-charts"}
		crds      = objID{"Kustomization", ns, "platform-crds"}
		apps      = objID{"Kustomization", other, "platform-apps"}
		db        = objID{"HelmRelease", ns, "platform-db"}
		api       = objID{"HelmRelease", other, "platform-api"}
		cache     = objID{"HelmRelease", other, "platform-cache"}
	)
	key := func(id objID) string { return id.kind + " " + id.namespace + "/" + id.name }

	e := startExporter(t, c.kubeconfig)
	shard := startExporter(t, c.kubeconfig, "--shard=0", "--total-shards=2", "--no-collector.controllers")
	e.waitReady()
	shard.waitReady()

	// settle scrapes until the exporter holds every listed object and its
	// references, then checks them against the server.
	settle := func(what string, check func(s scrape, listed map[string][]unstructured.Unstructured) error) scrape {
		t.Helper()
		var s scrape
		eventually(t, 30*time.Second, func() error {
			listed := listFluxObjects(t, c)
			s = e.scrape()
			if got := len(s.find("flux_resource_info", nil)); got != countListed(listed) {
				return fmt.Errorf("%s: %d objects scraped, the server lists %d", what, got, countListed(listed))
			}
			wantEdges, wantMissing := expectedGraph(listed)
			if err := diffEdges(scrapedEdges(s, "flux_resource_dependency_info"), wantEdges); err != nil {
				return fmt.Errorf("%s: flux_resource_dependency_info: %w", what, err)
			}
			if err := diffEdges(scrapedEdges(s, "flux_resource_dependency_missing"), wantMissing); err != nil {
				return fmt.Errorf("%s: flux_resource_dependency_missing: %w", what, err)
			}
			if got := len(s.find("flux_resource_dependents", nil)); got != countListed(listed) {
				return fmt.Errorf("%s: %d flux_resource_dependents series for %d objects", what, got, countListed(listed))
			}
			return check(s, listed)
		})
		return s
	}
	// wantGraph checks the chain's dependents and roots exactly.
	wantGraph := func(dependents map[objID]float64, roots map[objID][]objID) func(scrape, map[string][]unstructured.Unstructured) error {
		return func(s scrape, _ map[string][]unstructured.Unstructured) error {
			g := graphOf(s)
			var problems []string
			for id, want := range dependents {
				if got, ok := g.dependents[id]; !ok || got != want {
					problems = append(problems, fmt.Sprintf("%s: %v dependents (series %v), want %v", key(id), got, ok, want))
				}
			}
			for id, want := range roots {
				var w []string
				for _, r := range want {
					w = append(w, key(r))
				}
				sort.Strings(w)
				if !slices.Equal(g.roots[id], w) {
					problems = append(problems, fmt.Sprintf("%s: roots %v, want %v", key(id), g.roots[id], w))
				}
			}
			if len(problems) > 0 {
				return fmt.Errorf("%s", strings.Join(problems, "\n"))
			}
			return nil
		}
	}

	// The fleet as generated: platform-cache is named and missing.
	s := settle("as applied", wantGraph(
		map[objID]float64{manifests: 2, crds: 1, apps: 0, charts: 2, db: 1, api: 0},
		map[objID][]objID{
			crds: {manifests},
			apps: {manifests},
			db:   {charts},
			api:  {charts, cache},
		}))
	if _, wantMissing := expectedGraph(listFluxObjects(t, c)); !wantMissing[depEdge{from: api, to: cache}] || len(wantMissing) != 1 {
		t.Errorf("the fleet's missing references are %v, want only %s's dependsOn %s", slices.Collect(maps.Keys(wantMissing)), key(api), key(cache))
	}
	t.Logf("as applied: %d references, %d roots", len(s.find("flux_resource_dependency_info", nil)), len(s.find("flux_resource_root_cause_info", nil)))

	// A sharded replica: its own objects' references, nothing computed
	// across objects.
	eventually(t, 30*time.Second, func() error {
		ss := shard.scrape()
		own := objectsOf(ss)
		want := map[depEdge]bool{}
		for e := range scrapedEdges(s, "flux_resource_dependency_info") {
			if own[e.from] {
				want[e] = true
			}
		}
		if len(own) == 0 || len(own) == countListed(listFluxObjects(t, c)) {
			return fmt.Errorf("shard 0 of 2 holds %d objects", len(own))
		}
		if err := diffEdges(scrapedEdges(ss, "flux_resource_dependency_info"), want); err != nil {
			return fmt.Errorf("shard 0 of 2: %w", err)
		}
		for _, fam := range []string{"flux_resource_dependency_missing", "flux_resource_dependents", "flux_resource_root_cause_info"} {
			if n := len(ss.find(fam, nil)); n > 0 {
				return fmt.Errorf("shard 0 of 2 reports %d %s series", n, fam)
			}
		}
		return nil
	})

	// The missing HelmRelease is created, Ready: nothing is missing, and
	// platform-api's only root is its chart source.
	c.apply(t, fmt.Appendf(nil, `
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: %s, namespace: %s}
spec: {interval: 10m, chartRef: {kind: OCIRepository, name: platform-charts, namespace: %s}}
status:
  observedGeneration: 1
  conditions: [{type: Ready, status: "True", reason: InstallSucceeded, message: done, observedGeneration: 1, lastTransitionTime: "2025-06-01T00:00:00Z"}]
`, cache.name, cache.namespace, ns))
	settle("platform-cache created", wantGraph(
		map[objID]float64{charts: 3, db: 1, cache: 1},
		map[objID][]objID{api: {charts}, cache: nil}))

	// The manifests source is deleted: both Kustomizations reference a
	// missing object, which is now their root, and nothing of it is left.
	del := func(id objID) {
		t.Helper()
		res := c.dyn.Resource(gvrs[id.kind]).Namespace(id.namespace)
		if err := res.Delete(t.Context(), id.name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete %s: %v", key(id), err)
		}
		// The fleet's objects carry finalizers.fluxcd.io, as the real
		// controllers add it; their reconcileDelete removes it.
		_, err := res.Patch(t.Context(), id.name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("remove the finalizers of %s: %v", key(id), err)
		}
	}
	del(manifests)
	s = settle("platform deleted", wantGraph(
		map[objID]float64{crds: 1},
		map[objID][]objID{crds: {manifests}, apps: {manifests}}))
	leftBehind(t, s, manifests)
	if !strings.Contains(s.text, fmt.Sprintf(`flux_resource_dependency_missing{dependency_kind="OCIRepository",dependency_name="platform",dependency_namespace=%q,exported_namespace=%q,kind="Kustomization",name="platform-crds"} 1`, ns, ns)) {
		t.Errorf("no missing source for %s:\n%s", key(crds), grep(s.text, "flux_resource_dependency_missing"))
	}

	// The first layer goes too: the second depends on a missing
	// Kustomization as well as a missing source.
	del(crds)
	s = settle("platform-crds deleted", wantGraph(nil, map[objID][]objID{apps: {crds, manifests}}))
	leftBehind(t, s, crds)
}

// leftBehind fails the test for any series of the deleted object, in any
// family.
func leftBehind(t *testing.T, s scrape, id objID) {
	t.Helper()
	for name, fam := range s.fams {
		for _, m := range fam.GetMetric() {
			if l := labels(m); l["kind"] == id.kind && l["exported_namespace"] == id.namespace && l["name"] == id.name {
				t.Errorf("%s of the deleted %s %s/%s is left: %v", name, id.kind, id.namespace, id.name, l)
			}
		}
	}
}
