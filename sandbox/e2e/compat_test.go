package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

// clusterStatsQueries are the PromQL of every panel of Flux's own "Flux
// Cluster Stats" dashboard (uid flux-cluster) that reads gotk_resource_info,
// and of its namespace variable, as data: copied from fluxcd/flux2-monitoring-
// example, monitoring/configs/dashboards/cluster.json, at commit
// 7ab65dc8b90f7a6751d88f18bbb4e1bee33bf334 (2026-03-06). Its other panels
// read the controllers' gotk_reconcile_duration_seconds, and its companion
// "Flux Control Plane" dashboard reads no gotk_resource_info. Every one of
// these panels is an instant query.
var (
	clusterStatsNamespaceVariable = `label_values(gotk_resource_info,exported_namespace)`
	clusterStatsQueries           = []struct{ panel, expr string }{
		{"Cluster Reconcilers", `count(gotk_resource_info{exported_namespace=~"$namespace", customresource_kind=~"Kustomization|HelmRelease"})`},
		{"Failing Reconcilers", `count(gotk_resource_info{exported_namespace=~"$namespace", customresource_kind=~"Kustomization|HelmRelease", ready="False"})`},
		{"Kubernetes Manifests Sources", `count(gotk_resource_info{exported_namespace=~"$namespace", customresource_kind=~"GitRepository|HelmRepository|Bucket|OCIRepository"})`},
		{"Failing Sources", `count(gotk_resource_info{exported_namespace=~"$namespace", customresource_kind=~"GitRepository|HelmRepository|Bucket|OCIRepository", ready="False"})`},
		{"Cluster reconciliation readiness ", `gotk_resource_info{exported_namespace=~"$namespace", customresource_kind=~"Kustomization|HelmRelease"}`},
		{"Source acquisition readiness ", `gotk_resource_info{exported_namespace=~"$namespace", customresource_kind=~"GitRepository|HelmRepository|Bucket|OCIRepository"}`},
		{"Suspended Objects", `gotk_resource_info{exported_namespace=~"$namespace", suspended="true"}`},
	}
)

// The kinds those panels select.
var (
	reconcilerKinds = []string{"Kustomization", "HelmRelease"}
	manifestSources = []string{"GitRepository", "HelmRepository", "Bucket", "OCIRepository"}
	// gotkKinds are the kinds the upstream kube-state-metrics configuration
	// exports gotk_resource_info for.
	gotkKinds = []string{"Kustomization", "HelmRelease", "GitRepository", "Bucket", "HelmRepository", "HelmChart",
		"OCIRepository", "Alert", "Provider", "Receiver", "ImageRepository", "ImagePolicy", "ImageUpdateAutomation"}
)

// compatFleet holds a failing reconciler, a failing source and a suspended
// object, which the panels above need to show data; requireCompatStates
// says which is missing when a generator change loses one.
var compatFleet = fleet.Options{Seed: 1, Objects: 60, Namespaces: 3}

// TestCompatAgainstRealPrometheus proves the compatibility families on a
// real Prometheus scraping the exporter binary that watches the sandbox
// fleet: every gotk_resource_info panel of Flux's own Cluster Stats
// dashboard returns data, and the counts the stat panels show are the
// fleet's; the team-label join docs/team-labels.md gives adds label_team to
// a shipped alert; and the Flux Operator's kinds have their families with
// the values the fleet gave them.
func TestCompatAgainstRealPrometheus(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (%v): install Debian's prometheus package (apt-get update && apt-get install -y prometheus)", err)
	}
	c := newCluster(t, apiserver.ModeCRD)
	f, err := fleet.Generate(compatFleet)
	if err != nil {
		t.Fatal(err)
	}
	team := requireCompatStates(t, f)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	err = fleet.Apply(ctx, c.srv.RESTConfig(), f)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	// The object the join is shown on gets a team label.
	patch := []byte(`{"metadata":{"labels":{"team":"payments"}}}`)
	if _, err := c.dyn.Resource(gvrs[team.kind]).Namespace(team.namespace).Patch(t.Context(), team.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("label %v: %v", team, err)
	}
	listed := listFluxObjects(t, c)

	e := startExporter(t, c.kubeconfig, "--compat.gotk-resource-info", "--no-collector.controllers",
		// kustomisations is a typo, which selects nothing and is logged.
		"--metric-labels-allowlist=kustomizations=[team],kustomisations=[team]",
		"--metric-annotations-allowlist=fluxinstances=[fluxcd.controlplane.io/*]")
	e.waitReady()
	eventually(t, 30*time.Second, func() error {
		lines := logLines(e, "An allowlist names a resource no watched Flux kind has")
		if len(lines) != 1 || !strings.Contains(lines[0], `"resource":"kustomisations"`) || !strings.Contains(lines[0], `"flag":"--metric-labels-allowlist"`) {
			return fmt.Errorf("want one warning naming kustomisations and the flag, got %q", lines)
		}
		return nil
	})
	inst := strings.TrimPrefix(e.url, "http://")
	prom := startPrometheus(t, promBin, []string{inst})
	eventually(t, 60*time.Second, func() error {
		for _, q := range []string{`gotk_resource_info`, `flux_resource_labels{label_team="payments"}`, `flux_instance_info`} {
			if res, err := prom.query(q, time.Now()); err != nil || !anyData(res) {
				return fmt.Errorf("no data yet for %s (err %v)", q, err)
			}
		}
		return nil
	})

	t.Run("flux cluster stats", func(t *testing.T) { checkClusterStats(t, prom, listed) })
	t.Run("team label join", func(t *testing.T) { checkTeamJoin(t, prom, team) })
	t.Run("flux operator", func(t *testing.T) { checkOperatorFamilies(t, prom, listed) })
}

// requireCompatStates checks that the fleet has what the panels need and
// picks a failing Kustomization, not suspended and not waiting on a
// dependency, for the team-label join.
func requireCompatStates(t *testing.T, f *fleet.Fleet) objID {
	t.Helper()
	have := map[string]bool{}
	var team objID
	for _, o := range f.Objects {
		u := o.Object
		ready := conditionOf(u, "Ready")
		switch {
		case slices.Contains(reconcilerKinds, o.Kind) && ready.status == "False":
			have["a failing Kustomization or HelmRelease"] = true
		case slices.Contains(manifestSources, o.Kind) && ready.status == "False":
			have["a failing Git, Helm, Bucket or OCI source"] = true
		}
		if o.Suspended && slices.Contains(gotkKinds, o.Kind) {
			have["a suspended object"] = true
		}
		if team == (objID{}) && o.Kind == "Kustomization" && !o.Suspended && ready.ok && ready.status != "True" && ready.reason != "DependencyNotReady" {
			team = idOf(u)
		}
	}
	have["a failing Kustomization to label"] = team != objID{}
	var missing []string
	for _, what := range []string{"a failing Kustomization or HelmRelease", "a failing Git, Helm, Bucket or OCI source", "a suspended object", "a failing Kustomization to label"} {
		if !have[what] {
			missing = append(missing, what)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("fleet %+v lacks %s; pick another seed", compatFleet, strings.Join(missing, ", "))
	}
	return team
}

// checkClusterStats resolves $namespace as Grafana does for the variable's
// "All" (a regular expression of every value it lists), runs each panel's
// query, and checks that the stat panels count what the API server holds.
func checkClusterStats(t *testing.T, prom *prometheusServer, listed map[string][]unstructured.Unstructured) {
	m := labelValuesRE.FindStringSubmatch(clusterStatsNamespaceVariable)
	if m == nil {
		t.Fatalf("the namespace variable %q is not label_values(selector, label)", clusterStatsNamespaceVariable)
	}
	var namespaces []string
	params := url.Values{"match[]": {m[1]}, "start": {promTime(prom.started)}, "end": {promTime(time.Now())}}
	if err := prom.get("/api/v1/label/"+m[2]+"/values", params, &namespaces); err != nil {
		t.Fatal(err)
	}
	wantNS := map[string]bool{}
	for _, kind := range gotkKinds {
		for _, u := range listed[kind] {
			wantNS[u.GetNamespace()] = true
		}
	}
	if len(namespaces) != len(wantNS) {
		t.Errorf("$namespace lists %v, the server has objects of the upstream kinds in %v", namespaces, wantNS)
	}
	quoted := make([]string, len(namespaces))
	for i, ns := range namespaces {
		quoted[i] = regexp.QuoteMeta(ns)
	}
	vals := map[string]string{"namespace": "(" + strings.Join(quoted, "|") + ")"}

	count := func(kinds []string, pick func(u *unstructured.Unstructured) bool) int {
		n := 0
		for _, k := range kinds {
			for i := range listed[k] {
				if pick(&listed[k][i]) {
					n++
				}
			}
		}
		return n
	}
	all := func(*unstructured.Unstructured) bool { return true }
	failing := func(u *unstructured.Unstructured) bool { return conditionOf(u, "Ready").status == "False" }
	want := map[string]int{
		"Cluster Reconcilers":               count(reconcilerKinds, all),
		"Failing Reconcilers":               count(reconcilerKinds, failing),
		"Kubernetes Manifests Sources":      count(manifestSources, all),
		"Failing Sources":                   count(manifestSources, failing),
		"Cluster reconciliation readiness ": count(reconcilerKinds, all),
		"Source acquisition readiness ":     count(manifestSources, all),
		"Suspended Objects":                 count(gotkKinds, isSuspended),
	}
	for _, q := range clusterStatsQueries {
		expr, err := interpolate(q.expr, vals)
		if err != nil {
			t.Fatalf("%s: %v", q.panel, err)
		}
		res, err := prom.query(expr, time.Now())
		if err != nil {
			t.Fatalf("%s: %v\n%s", q.panel, err, expr)
		}
		got := countData(res)
		if strings.HasPrefix(q.expr, "count(") && len(res) == 1 && res[0].Value != nil {
			got = int(res[0].Value.v)
		}
		switch {
		case got == 0:
			t.Errorf("%s: no data for %s", q.panel, expr)
		case got != want[q.panel]:
			t.Errorf("%s: %d, the server holds %d: %s", q.panel, got, want[q.panel], expr)
		default:
			t.Logf("%-34s %d", q.panel, got)
		}
	}
}

// checkTeamJoin runs the shipped FluxResourceNotReady expression joined
// with flux_resource_labels as docs/team-labels.md writes it: the labelled
// Kustomization gets label_team, and with the documented fallback the
// alerts of kinds the allowlist does not name are kept, each once.
func checkTeamJoin(t *testing.T, prom *prometheusServer, team objID) {
	var expr string
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "FluxResourceNotReady" {
				expr = strings.TrimSpace(r.Expr)
			}
		}
	}
	if expr == "" {
		t.Fatal("no FluxResourceNotReady in the rule file")
	}
	const on = "on (cluster, job, instance, exported_namespace, kind, name)"
	joined := "(" + expr + ")\n* " + on + " group_left (label_team)\nflux_resource_labels"
	withFallback := joined + "\nor " + on + "\n(" + expr + ")"

	bare, err := prom.query(expr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got, err := prom.query(joined, time.Now())
	if err != nil {
		t.Fatalf("%v\n%s", err, joined)
	}
	labelled := false
	for _, s := range got {
		if s.Metric["kind"] != "Kustomization" {
			t.Errorf("the join kept %v: only Kustomizations have flux_resource_labels", s.Metric)
		}
		if s.Metric["name"] == team.name && s.Metric["exported_namespace"] == team.namespace {
			labelled = s.Metric["label_team"] == "payments"
		}
	}
	if !labelled {
		t.Errorf("the join gives %v no label_team=\"payments\":\n%v", team, got)
	}
	all, err := prom.query(withFallback, time.Now())
	if err != nil {
		t.Fatalf("%v\n%s", err, withFallback)
	}
	key := func(s promSeries) string {
		return s.Metric["kind"] + "/" + s.Metric["exported_namespace"] + "/" + s.Metric["name"]
	}
	var wantKeys, gotKeys []string
	for _, s := range bare {
		wantKeys = append(wantKeys, key(s))
	}
	for _, s := range all {
		gotKeys = append(gotKeys, key(s))
	}
	slices.Sort(wantKeys)
	slices.Sort(gotKeys)
	if !slices.Equal(gotKeys, wantKeys) || !slices.ContainsFunc(bare, func(s promSeries) bool { return s.Metric["kind"] != "Kustomization" }) {
		t.Errorf("with the fallback, the alerts are %v; without the join %v (and some not Kustomizations)", gotKeys, wantKeys)
	}
	t.Logf("FluxResourceNotReady: %d alerts, %d of them with flux_resource_labels", len(bare), len(got))
}

// checkOperatorFamilies queries the families of the Flux Operator's kinds
// as flux-operator users write them, against what the fleet created.
func checkOperatorFamilies(t *testing.T, prom *prometheusServer, listed map[string][]unstructured.Unstructured) {
	if len(listed["FluxInstance"]) != 1 || len(listed["ResourceSet"]) != 1 || len(listed["FluxReport"]) != 1 {
		t.Fatalf("the fleet has %d FluxInstances, %d ResourceSets, %d FluxReports; want one each",
			len(listed["FluxInstance"]), len(listed["ResourceSet"]), len(listed["FluxReport"]))
	}
	fi, rs, fr := listed["FluxInstance"][0], listed["ResourceSet"][0], listed["FluxReport"][0]
	registry, _, _ := unstructured.NestedString(fi.Object, "spec", "distribution", "registry")
	revision, _, _ := unstructured.NestedString(fi.Object, "status", "lastAppliedRevision")
	entries, _, _ := unstructured.NestedSlice(rs.Object, "status", "inventory", "entries")
	version, _, _ := unstructured.NestedString(fr.Object, "spec", "distribution", "version")
	for q, want := range map[string]float64{
		fmt.Sprintf(`flux_instance_info{exported_namespace=%q, name=%q, ready="True", suspended="False", registry=%q, revision=%q, uid=%q}`,
			fi.GetNamespace(), fi.GetName(), registry, revision, fi.GetUID()): 1,
		fmt.Sprintf(`flux_resourceset_inventory_entries{exported_namespace=%q, name=%q}`, rs.GetNamespace(), rs.GetName()):                       float64(len(entries)),
		fmt.Sprintf(`flux_report_distribution_info{name=%q, version=%q, status="Installed", managed_by="flux-operator"}`, fr.GetName(), version): 1,
		`flux_resource_annotations{kind="FluxInstance", annotation_fluxcd_controlplane_io_reconcile_every="1h"}`:                                 1,
		`count(flux_resource_info{kind=~"FluxInstance|ResourceSet|FluxReport", ready="True", suspended="False"})`:                                3,
	} {
		res, err := prom.query(q, time.Now())
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if len(res) != 1 || res[0].Value == nil || res[0].Value.v != want {
			t.Errorf("%s = %v, want one series of %s", q, res, strconv.FormatFloat(want, 'g', -1, 64))
		}
	}
}
