package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/alerts"
	"github.com/flux-exporter/flux_exporter/dashboards"
	"github.com/flux-exporter/flux_exporter/internal/collector"
	"github.com/flux-exporter/flux_exporter/internal/kube"
	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
	"github.com/flux-exporter/flux_exporter/sandbox/standin"
)

// mixinShards runs TestMixinAgainstRealPrometheus's main exporter as that
// many shards (--shard, --total-shards); TestMixinSharded always runs it as
// three, which takes no longer than one.
var mixinShards = flag.Int("mixin.shards", 1, "run TestMixinAgainstRealPrometheus's main exporter as this many shards")

// mainShards are the replicas of the main exporter, by shard.
type mainShards struct {
	exps  []*exporter
	insts []string
	uids  map[objID]types.UID
}

// of is the instance that exports the object: the one its UID hashes to.
func (m *mainShards) of(id objID) string {
	if len(m.insts) == 1 {
		return m.insts[0]
	}
	uid, ok := m.uids[id]
	if !ok {
		panic(fmt.Sprintf("no UID known for %v", id)) // the test lists every object first
	}
	return m.insts[kube.ShardOf(uid, len(m.insts))]
}

// eventURL is where an event about the object is posted. Sharded, it is a
// replica that does not export the object, as a Service may pick: the
// alerts must still land on the object's own replica.
func (m *mainShards) eventURL(id objID) string {
	if len(m.exps) == 1 {
		return m.exps[0].url
	}
	uid := m.uids[id]
	return m.exps[(kube.ShardOf(uid, len(m.exps))+1)%len(m.exps)].url
}

func (m *mainShards) learnUIDs(listed map[string][]unstructured.Unstructured) {
	for _, objs := range listed {
		for i := range objs {
			m.uids[idOf(&objs[i])] = objs[i].GetUID()
		}
	}
}

// mixinFleet is a fixed seed whose mix holds every state the alerts and the
// failure panels need; requireMixinStates says which when a change to the
// generator loses one.
var mixinFleet = fleet.Options{Seed: 4, Objects: 150, Namespaces: 4}

const (
	promJob     = "flux-exporter"
	promCluster = "sandbox"
	// fetchFailingThreshold is what testdata/mixin/overrides.rules.yaml
	// records as flux:source_fetch_failing_threshold:seconds.
	fetchFailingThreshold = 5 * time.Second
	// Grafana's $__rate_interval for a 1s step on a data source whose
	// scrape interval is 1s: max($__interval + scrape, 4 × scrape).
	rateInterval = "4s"
)

// imageRepositoryReconciler is image-reflector-controller's, which
// standin.FluxControllers leaves out.
var imageRepositoryReconciler = standin.Reconciler{Name: "imagerepository",
	GVK: schema.GroupVersionKind{Group: "image.toolkit.fluxcd.io", Version: "v1", Kind: "ImageRepository"}}

// sourceKinds are the kinds FluxSourceFetchFailing watches the Ready
// condition of.
var sourceKinds = map[string]bool{"GitRepository": true, "OCIRepository": true, "Bucket": true, "HelmRepository": true, "HelmChart": true}

// TestMixinAgainstRealPrometheus is the end-to-end proof of the dashboards
// and alerts: the sandbox fleet on a real API server, stand-in Flux
// controllers, the real exporter binary with its events webhook, and a real
// Prometheus scraping it every second with the shipped rule file. Every
// dashboard query and every alert expression runs through Prometheus's HTTP
// API and must return data, and exactly the alerts the cluster's state calls
// for must be pending or firing.
func TestMixinAgainstRealPrometheus(t *testing.T) { testMixin(t, *mixinShards) }

// TestMixinSharded is the same proof with the main exporter as three
// shards: each object on the replica its UID hashes to, events posted to a
// replica that does not have their object, and still exactly the alerts the
// cluster calls for, each once, and every panel with data.
func TestMixinSharded(t *testing.T) { testMixin(t, 3) }

func testMixin(t *testing.T, shards int) {
	if shards < 1 {
		t.Fatalf("-mixin.shards=%d: want at least 1", shards)
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (%v): install Debian's prometheus package (apt-get update && apt-get install -y prometheus)", err)
	}
	begin := time.Now()
	phase := func(what string) { t.Logf("%5.1fs %s", time.Since(begin).Seconds(), what) }

	c := newCluster(t, apiserver.ModeFull)
	kc, err := kubernetes.NewForConfig(c.srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	opts := mixinFleet
	opts.Now = time.Now() // statuses read as if reconciled minutes to days ago
	f, err := fleet.Generate(opts)
	if err != nil {
		t.Fatal(err)
	}
	picks := requireMixinStates(t, f)
	applyCtx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	err = fleet.Apply(applyCtx, c.srv.RESTConfig(), f)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	phase(fmt.Sprintf("fleet seed %d applied:\n%s", opts.Seed, f.Summary()))

	startMixinControllers(t, c, kc)
	phase("stand-in controllers running")

	key := []byte("mixin-hmac-token")
	keyFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	// Scrapes come every second with a 900ms timeout; the default 500ms
	// offset would leave the controller pods only 400ms.
	main := &mainShards{uids: map[objID]types.UID{}}
	for i := range shards {
		// The default family set: the shipped rules and dashboards must
		// work on what users get without opting in.
		args := []string{"--events.enabled", "--events.hmac-key-file=" + keyFile, "--web.timeout-offset=100ms",
			"--metric-labels-allowlist=kustomizations=[team],helmreleases=[team]", defaultFamilies}
		if shards > 1 {
			args = append(args, fmt.Sprintf("--shard=%d", i), fmt.Sprintf("--total-shards=%d", shards))
		}
		main.exps = append(main.exps, startExporter(t, c.kubeconfig, args...))
	}
	main.learnUIDs(listFluxObjects(t, c))
	// A replica whose ClusterRole lacks the image automation group.
	restrictedKC, unsynced := restrictedKubeconfig(t, c)
	restricted := startExporter(t, restrictedKC, "--no-collector.controllers", defaultFamilies)
	// A replica that dies once Prometheus has scraped it.
	doomed := startExporter(t, c.kubeconfig, "--no-collector.controllers", defaultFamilies)
	inst := func(e *exporter) string { return strings.TrimPrefix(e.url, "http://") }
	for _, e := range main.exps {
		e.waitReady()
		main.insts = append(main.insts, inst(e))
	}
	// Shard 0 runs the controllers collector and gets the forged event.
	mainInst, restrictedInst, doomedInst := main.insts[0], inst(restricted), inst(doomed)
	phase(fmt.Sprintf("exporters listening: main %v, restricted %s, doomed %s", main.insts, restrictedInst, doomedInst))

	prom := startPrometheus(t, promBin, append(slices.Clone(main.insts), restrictedInst, doomedInst))
	phase("prometheus ready at " + prom.url)

	// Wait for data, including the values the changes below move away
	// from, so that Prometheus sees them change.
	eventually(t, 90*time.Second, func() error {
		var queries []string
		for _, i := range append(slices.Clone(main.insts), restrictedInst, doomedInst) {
			queries = append(queries, fmt.Sprintf(`up{job=%q, instance=%q} == 1`, promJob, i))
		}
		for _, q := range append(queries,
			fmt.Sprintf(`flux_events_requests_total{instance=%q, code="401"} == 0`, mainInst),
			fmt.Sprintf(`flux_helmrelease_release_revision{instance=%q, exported_namespace=%q, name=%q}`, main.of(picks.release), picks.release.namespace, picks.release.name),
			fmt.Sprintf(`flux_resource_info{instance=%q, kind="Kustomization", exported_namespace=%q, name=%q}`, main.of(picks.kustomization), picks.kustomization.namespace, picks.kustomization.name),
			fmt.Sprintf(`flux_controller_workqueue_depth{instance=%q, controller="image-reflector-controller"} > 0`, mainInst),
		) {
			if res, err := prom.query(q, time.Now()); err != nil || !anyData(res) {
				return fmt.Errorf("no data yet for %s (err %v)", q, err)
			}
		}
		return nil
	})
	phase("prometheus has data from every exporter")

	doomed.stop()
	ch := makeChanges(t, c, main, key, picks)
	startReconcileRequests(t, c, []objID{picks.release, picks.drifting, picks.kustomization, picks.source, ch.broken})
	phase("replica stopped, changes applied, events posted")

	rules := loadRules(t)
	listed := listFluxObjects(t, c)
	main.learnUIDs(listed) // the source makeChanges created
	want := expectedAlerts(listed, ch, unsynced, main, restrictedInst, doomedInst)
	eventually(t, 60*time.Second, func() error {
		// Until then the override is not proven: without it broken-repo
		// would not fire either. One scrape and one evaluation later, it must.
		if time.Since(ch.brokenSince) < fetchFailingThreshold+3*time.Second {
			return fmt.Errorf("%v has failed for less than the threshold", ch.broken)
		}
		return prom.checkAlerts(rules, want(time.Now()))
	})
	perAlert := map[string]int{}
	for k := range want(time.Now()) {
		perAlert[k.alert]++
	}
	phase(fmt.Sprintf("exactly the expected alerts are pending or firing: %v", perAlert))

	t.Run("rules evaluate", func(t *testing.T) { prom.checkRuleHealth(t) })
	t.Run("alert expressions", func(t *testing.T) { prom.checkAlertExprs(t, rules) })
	phase("alert expressions checked")
	t.Run("dashboards", func(t *testing.T) { prom.checkDashboards(t, picks) })
	t.Run("change annotations", func(t *testing.T) { prom.checkChangeAnnotations(t, picks, ch) })
	phase("dashboards checked")
}

// objID names a Flux object.
type objID struct{ kind, namespace, name string }

func idOf(u *unstructured.Unstructured) objID {
	return objID{u.GetKind(), u.GetNamespace(), u.GetName()}
}

// mixinPicks are the fleet objects the test acts on.
type mixinPicks struct {
	// release is a failing HelmRelease that was rolled back, with a release
	// history: resource detail's first variable set.
	release objID
	// kustomization, from the GitRepository source, is ready with a history:
	// resource detail's second variable set. It applies a new revision
	// during the run.
	kustomization, source objID
	// drifting is a HelmRelease with drift detection on; its controller
	// reports drift through an event.
	drifting objID
}

// condition is one status condition of an object; ok is false when the
// object has none of that type.
type condition struct {
	status, reason string
	since          time.Time
	ok             bool
	// generation is the condition's observedGeneration; 0 when absent.
	generation int64
}

func conditionOf(u *unstructured.Unstructured, typ string) condition {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != typ {
			continue
		}
		out := condition{ok: true}
		out.status, _ = m["status"].(string)
		out.reason, _ = m["reason"].(string)
		if s, _ := m["lastTransitionTime"].(string); s != "" {
			out.since, _ = time.Parse(time.RFC3339, s)
		}
		out.generation, _ = m["observedGeneration"].(int64)
		return out
	}
	return condition{}
}

func hasConditionReason(u *unstructured.Unstructured, reason string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	return slices.ContainsFunc(conds, func(c any) bool {
		m, _ := c.(map[string]any)
		return m["reason"] == reason
	})
}

func isSuspended(u *unstructured.Unstructured) bool {
	s, _, _ := unstructured.NestedBool(u.Object, "spec", "suspend")
	return s
}

func lastRelease(u *unstructured.Unstructured) map[string]any {
	history, _, _ := unstructured.NestedSlice(u.Object, "status", "history")
	if len(history) == 0 {
		return nil
	}
	m, _ := history[0].(map[string]any)
	return m
}

func rolledBack(u *unstructured.Unstructured) bool {
	if u.GetKind() != "HelmRelease" {
		return false
	}
	last := lastRelease(u)
	remediated := conditionOf(u, "Remediated")
	return last != nil && last["action"] == "rollback" ||
		remediated.status == "True" && remediated.reason == "RollbackSucceeded" || conditionOf(u, "Ready").reason == "RollbackSucceeded"
}

// uninstalled restates FluxHelmReleaseUninstalled's condition: the release
// was remediated by an uninstall.
func uninstalled(u *unstructured.Unstructured) bool {
	if u.GetKind() != "HelmRelease" {
		return false
	}
	last := lastRelease(u)
	remediated := conditionOf(u, "Remediated")
	return last != nil && last["action"] == "uninstall-remediation" ||
		remediated.status == "True" && remediated.reason == "UninstallSucceeded"
}

// notReadySince restates docs/flux-semantics.md rule 12 over one state of
// an object, as the exporter reads it when it has seen no earlier state:
// the earliest transition of a condition that says it is failing, or a
// failed Kustomization history entry's firstReconciled.
func notReadySince(u *unstructured.Unstructured) (time.Time, bool) {
	ready := conditionOf(u, "Ready")
	if ready.status == "True" || (!ready.ok && staticObject(u)) {
		return time.Time{}, false
	}
	var since time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (since.IsZero() || t.Before(since)) {
			since = t
		}
	}
	for typ, failing := range map[string]string{"Ready": "", "Reconciling": "True", "Stalled": "True", "FetchFailed": "True",
		"BuildFailed": "True", "StorageOperationFailed": "True", "IncludeUnavailable": "True", "SourceVerified": "False"} {
		c := conditionOf(u, typ)
		if c.ok && (c.status == failing || failing == "" && c.status != "True") {
			earlier(c.since)
		}
	}
	history, _, _ := unstructured.NestedSlice(u.Object, "status", "history")
	if len(history) > 0 {
		h, _ := history[0].(map[string]any)
		if st, _ := h["lastReconciledStatus"].(string); st != "" && st != "ReconciliationSucceeded" {
			first, _ := h["firstReconciled"].(string)
			t, _ := time.Parse(time.RFC3339, first)
			earlier(t)
		}
	}
	return since, !since.IsZero()
}

// deadline restates flux_resource_timeout_seconds.
func deadline(u *unstructured.Unstructured) time.Duration {
	parse := func(path ...string) (time.Duration, bool) {
		s, _, _ := unstructured.NestedString(u.Object, path...)
		d, err := time.ParseDuration(s)
		return d, s != "" && err == nil
	}
	switch u.GetKind() {
	case "Kustomization":
		if d, ok := parse("spec", "timeout"); ok {
			return d
		}
		d, _ := parse("spec", "interval")
		return max(d-30*time.Second, 30*time.Second)
	case "HelmRelease":
		best, found := time.Duration(0), false
		for _, p := range []string{"", "install", "upgrade", "test", "rollback", "uninstall"} {
			path := []string{"spec", p, "timeout"}
			if p == "" {
				path = []string{"spec", "timeout"}
			}
			if d, ok := parse(path...); ok && (!found || d > best) {
				best, found = d, true
			}
		}
		if !found {
			return 5 * time.Minute
		}
		return best
	}
	return 0
}

// requireMixinStates checks that the generated fleet holds every state the
// alerts and the failure panels are proven on, and picks the objects the
// test acts on.
func requireMixinStates(t *testing.T, f *fleet.Fleet) mixinPicks {
	t.Helper()
	s := f.Summary()
	have := map[string]bool{
		"a stalled object":     s.Total.Stalled > 0,
		"a suspended object":   s.Total.Suspended > 0,
		"a Ready=False object": s.Total.ReadyFalse > 0,
		"two ImageRepositories, for a work queue to back up": s.Kinds["ImageRepository"].Total >= 2,
	}
	byID := map[objID]*unstructured.Unstructured{}
	for _, o := range f.Objects {
		byID[idOf(o.Object)] = o.Object
	}
	var p mixinPicks
	for _, o := range f.Objects {
		u := o.Object
		if !o.Suspended && generationNotObserved(u) {
			have["an object whose generation is not observed"] = true
		}
		if o.Suspended || o.Status() == nil {
			continue
		}
		ready := conditionOf(u, "Ready")
		if conditionOf(u, "Stalled").status == "True" {
			have["a stalled object that is not suspended"] = true
		}
		if sourceKinds[o.Kind] && ready.status == "False" && !ready.since.IsZero() {
			have["a failing source with a lastTransitionTime"] = true
		}
		failures, _, _ := unstructured.NestedInt64(u.Object, "status", "failures")
		if o.Kind == "HelmRelease" && failures > 0 {
			have["a HelmRelease with failures"] = true
		}
		switch {
		case p.release == objID{} && o.Kind == "HelmRelease" && ready.status == "False" && failures > 0 && rolledBack(u) && lastRelease(u) != nil:
			p.release = idOf(u)
		case p.drifting == objID{} && o.Kind == "HelmRelease" && ready.status == "True":
			if mode, _, _ := unstructured.NestedString(u.Object, "spec", "driftDetection", "mode"); mode != "" && mode != "disabled" {
				p.drifting = idOf(u)
			}
		case p.kustomization == objID{} && o.Kind == "Kustomization" && ready.status == "True" && o.State == fleet.StateReady:
			history, _, _ := unstructured.NestedSlice(u.Object, "status", "history")
			srcKind, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "kind")
			srcName, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "name")
			src := byID[objID{"GitRepository", o.Namespace(), srcName}]
			if len(history) == 0 || srcKind != "GitRepository" || src == nil || isSuspended(src) || conditionOf(src, "Ready").status != "True" {
				continue
			}
			if _, ok, _ := unstructured.NestedMap(src.Object, "status", "artifact"); ok {
				p.kustomization, p.source = idOf(u), idOf(src)
			}
		}
	}
	planned := map[string][]unstructured.Unstructured{}
	for _, o := range f.Objects {
		planned[o.Kind] = append(planned[o.Kind], *o.Object)
	}
	_, dangling := expectedGraph(planned)
	have["a reference to an object that does not exist, from an object that is not suspended"] = slices.ContainsFunc(slices.Collect(maps.Keys(dangling)), func(e depEdge) bool {
		return !isSuspended(byID[e.from])
	})
	have["a failing, rolled-back HelmRelease with a release history"] = p.release != objID{}
	have["a ready HelmRelease with drift detection"] = p.drifting != objID{}
	have["a ready Kustomization with a history, from a ready GitRepository"] = p.kustomization != objID{}
	var missing []string
	for what, ok := range have {
		if !ok {
			missing = append(missing, what)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Fatalf("fleet %+v lacks %s; pick another seed or size", mixinFleet, strings.Join(missing, ", "))
	}
	return p
}

// startMixinControllers runs the stand-in Flux controllers of
// standin.FluxControllers, which reconcile their kinds, and two more:
// image-reflector-controller, stuck on its first ImageRepository, and
// image-automation-controller, whose only pod never turns ready.
func startMixinControllers(t *testing.T, c *cluster, kc kubernetes.Interface) {
	t.Helper()
	running, err := standin.Start(context.Background(), c.srv.RESTConfig(), standin.FluxVersion, standin.FluxControllers())
	if err != nil {
		t.Fatalf("start stand-in controllers: %v", err)
	}
	// Registered after newCluster's cleanup, so it runs before the API
	// server stops.
	t.Cleanup(func() {
		if err := running.Stop(); err != nil {
			t.Errorf("stop stand-in controllers: %v", err)
		}
	})
	runStuckManager(t, c.srv.RESTConfig(), imageRepositoryReconciler)
	cs := &controllers{t: t, kc: kc}
	const reflector, automation = "image-reflector-controller", "image-automation-controller"
	cs.deploy(reflector, standin.FluxVersion, "ghcr.io/fluxcd/"+reflector+":v1.0.3", 1)
	cs.pod(reflector, reflector+"-0", standin.FluxVersion, serveEndpoint(t, standin.MetricsHandler(imageRepositoryReconciler)).port, true)
	cs.status(reflector, 1, 1, 1)
	cs.deploy(automation, standin.FluxVersion, "ghcr.io/fluxcd/"+automation+":v1.0.3", 1)
	cs.pod(automation, automation+"-0", standin.FluxVersion, deadPort(t), false)
	cs.status(automation, 1, 1, 0)
}

// runStuckManager runs a controller-runtime manager whose reconciler hangs
// on the first object it takes until the test ends, as a controller waiting
// on a registry that never answers: the rest of its queue waits behind it,
// so the work queue depth and longest-running processor are genuine.
func runStuckManager(t *testing.T, cfg *rest.Config, r standin.Reconciler) {
	t.Helper()
	r.Reconcile = func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
		<-ctx.Done()
		return reconcile.Result{}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, err := standin.RunManager(ctx, cfg, r)
	if err != nil {
		cancel()
		t.Fatalf("start stuck manager: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("stuck manager: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("stuck manager did not stop within 30s")
		}
	})
}

// restrictedKubeconfig is a ServiceAccount that may read the CRDs and every
// Flux group but image.toolkit.fluxcd.io, as with a ClusterRole written
// before the image automation controllers were installed. It returns the
// kinds the exporter cannot sync with it.
func restrictedKubeconfig(t *testing.T, c *cluster) (string, []string) {
	t.Helper()
	ctx := t.Context()
	const denied = "image.toolkit.fluxcd.io"
	read := []string{"get", "list", "watch"}
	var groups, unsynced []string
	for kind, gvr := range gvrs {
		switch {
		case gvr.Group == denied:
			unsynced = append(unsynced, kind)
		case !slices.Contains(groups, gvr.Group):
			groups = append(groups, gvr.Group)
		}
	}
	sort.Strings(groups)
	sort.Strings(unsynced)
	kc, err := kubernetes.NewForConfig(c.srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "flux-exporter-restricted"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"}, Verbs: read},
		{APIGroups: groups, Resources: []string{"*"}, Verbs: read},
	}}
	if _, err := kc.RbacV1().ClusterRoles().Create(ctx, role, metaCreate); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "flux-exporter-restricted"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "monitoring", Name: "flux-exporter-restricted"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}}
	if _, err := kc.RbacV1().ClusterRoleBindings().Create(ctx, binding, metaCreate); err != nil {
		t.Fatal(err)
	}
	saConfig, err := c.srv.ServiceAccountConfig(ctx, "monitoring", "flux-exporter-restricted")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := dynamic.NewForConfig(saConfig)
	if err != nil {
		t.Fatal(err)
	}
	// The authorizer learns of the binding through its informers.
	eventually(t, 30*time.Second, func() error {
		if _, err := sa.Resource(crdGVR).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
			return err
		}
		_, err := sa.Resource(gvrs["GitRepository"]).List(ctx, metav1.ListOptions{Limit: 1})
		return err
	})
	return writeTokenKubeconfig(t, saConfig), unsynced
}

// changes are what happens in the cluster while Prometheus watches.
type changes struct {
	broken      objID     // a source that starts failing
	brokenSince time.Time // its lastTransitionTime
	newRevision string    // applied by picks.kustomization
	revisedAt   time.Time // when it was applied
	releasedAt  time.Time // when picks.release got a new release revision
	drifted     objID
}

// makeChanges moves the cluster on as Flux would while Prometheus watches:
// a new source fails to fetch, the failing HelmRelease retries its upgrade
// and is rolled back again, the Kustomization applies its source's new
// commit, and notification-controller forwards the matching events, plus one
// request whose signature does not match.
func makeChanges(t *testing.T, c *cluster, main *mainShards, key []byte, p mixinPicks) changes {
	t.Helper()
	// The exporters count the delivery changes Flux records after they
	// started (docs/delivery.md), by Flux's one-second timestamps: the
	// story below starts 2 s before now, so now must be 3 s after them.
	for _, e := range main.exps {
		time.Sleep(time.Until(e.started.Add(3 * time.Second)))
	}
	// The objects belong to a team, for the Delivery dashboard's per-team
	// table: labelled before their changes, which count for the team that
	// owns the object when Flux makes them.
	labelTeam(t, c, p.kustomization, p.release)
	// A counter that appears at 1 is an increase Prometheus never sees:
	// the team's new delivery groups must be scraped at zero first
	// (scrape interval 1s).
	time.Sleep(2500 * time.Millisecond)
	now := time.Now().UTC().Truncate(time.Second)
	ch := changes{broken: objID{"GitRepository", "flux-system", standin.FailPrefix + "repo"}, brokenSince: now, drifted: p.drifting}
	c.apply(t, fmt.Appendf(nil, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: %[1]s, namespace: %[2]s}
spec: {interval: 1m, url: "https://github.com/acme/%[1]s", ref: {branch: main}}
status:
  observedGeneration: 1
  conditions:
    - {type: Ready, status: "False", reason: GitOperationFailed, observedGeneration: 1, lastTransitionTime: %[3]q,
       message: "failed to checkout and determine revision: unable to clone 'https://github.com/acme/%[1]s': authentication required"}
    - {type: FetchFailed, status: "True", reason: GitOperationFailed, observedGeneration: 1, lastTransitionTime: %[3]q,
       message: "failed to checkout and determine revision: unable to clone 'https://github.com/acme/%[1]s': authentication required"}
`, ch.broken.name, ch.broken.namespace, now.Format(time.RFC3339)))

	var chartVersion string
	editStatus(t, c, p.release, func(st map[string]any) {
		history, _ := st["history"].([]any)
		rollback, _ := history[0].(map[string]any)
		version, _ := rollback["version"].(int64)
		failed := copyMap(rollback)
		if len(history) > 1 { // the upgrade that failed before
			failed = copyMap(history[1].(map[string]any))
		}
		failed["version"], failed["status"], failed["action"] = version+1, "failed", "upgrade"
		failed["lastDeployed"], failed["digest"] = now.Add(-30*time.Second).Format(time.RFC3339), "sha256:"+randomHex(64)
		again := copyMap(rollback)
		again["version"], again["lastDeployed"], again["digest"] = version+2, now.Format(time.RFC3339), "sha256:"+randomHex(64)
		rollback["status"] = "superseded"
		chartVersion, _ = failed["chartVersion"].(string)
		st["history"] = append([]any{again, failed}, history[:min(len(history), 3)]...)
		for _, k := range []string{"failures", "upgradeFailures"} {
			n, _ := st[k].(int64)
			st[k] = n + 1
		}
	})
	ch.releasedAt = time.Now()

	// The commit was fetched 5 minutes ago. Its manifests failed their
	// health check 2 seconds ago (Ready False a second later), and passed
	// on the next attempt now: a change, a failed change, a lead time of
	// 5 minutes and a restore of 1 second for the Delivery dashboard.
	ch.newRevision = "main@sha1:" + randomHex(40)
	fetched, failedAt := now.Add(-5*time.Minute), now.Add(-2*time.Second)
	editStatus(t, c, p.source, func(st map[string]any) {
		art, _ := st["artifact"].(map[string]any)
		art["revision"], art["digest"], art["lastUpdateTime"] = ch.newRevision, "sha256:"+randomHex(64), fetched.Format(time.RFC3339)
	})
	digest := "sha256:" + randomHex(64)
	historyEntry := func(status string, first, last time.Time) map[string]any {
		return map[string]any{
			"digest": digest, "firstReconciled": first.Format(time.RFC3339), "lastReconciled": last.Format(time.RFC3339),
			"lastReconciledDuration": "2.4s", "lastReconciledStatus": status, "totalReconciliations": int64(1),
			"metadata": map[string]any{"revision": ch.newRevision},
		}
	}
	editStatus(t, c, p.kustomization, func(st map[string]any) {
		st["lastAttemptedRevision"] = ch.newRevision
		setReady(st, "False", "HealthCheckFailed", "health check failed after 1m0s: timeout waiting for: [Deployment status: 'InProgress']", failedAt.Add(time.Second))
		history, _ := st["history"].([]any)
		st["history"] = append([]any{historyEntry("HealthCheckFailed", failedAt, failedAt.Add(time.Second))}, history[:min(len(history), 4)]...)
	})
	editStatus(t, c, p.kustomization, func(st map[string]any) {
		st["lastAppliedRevision"], st["lastAttemptedRevision"] = ch.newRevision, ch.newRevision
		setReady(st, "True", "ReconciliationSucceeded", "Applied revision: "+ch.newRevision, now)
		history, _ := st["history"].([]any)
		st["history"] = append([]any{historyEntry("ReconciliationSucceeded", now, now)}, history[:min(len(history), 4)]...)
	})
	ch.revisedAt = time.Now()
	// Lead time joins an object with its source on one replica. Sharded,
	// the picked Kustomization's source may be on another one; then a
	// Kustomization whose source shares its shard applies a new commit too,
	// 2 minutes after the fetch.
	if main.of(p.kustomization) != main.of(p.source) {
		ks, src := sameShardSource(t, c, main, p)
		t.Logf("%v is exported by another replica than its source; %v applies a new commit of %v for the lead time", p.kustomization, ks, src)
		rev := "main@sha1:" + randomHex(40)
		labelTeam(t, c, ks)
		time.Sleep(2500 * time.Millisecond)
		editStatus(t, c, src, func(st map[string]any) {
			art, _ := st["artifact"].(map[string]any)
			art["revision"], art["digest"], art["lastUpdateTime"] = rev, "sha256:"+randomHex(64), now.Add(-2*time.Minute).Format(time.RFC3339)
		})
		editStatus(t, c, ks, func(st map[string]any) {
			st["lastAppliedRevision"], st["lastAttemptedRevision"] = rev, rev
			setReady(st, "True", "ReconciliationSucceeded", "Applied revision: "+rev, now)
			history, _ := st["history"].([]any)
			entry := map[string]any{
				"digest": "sha256:" + randomHex(64), "firstReconciled": now.Format(time.RFC3339), "lastReconciled": now.Format(time.RFC3339),
				"lastReconciledDuration": "1.2s", "lastReconciledStatus": "ReconciliationSucceeded", "totalReconciliations": int64(1),
				"metadata": map[string]any{"revision": rev},
			}
			st["history"] = append([]any{entry}, history[:min(len(history), 4)]...)
		})
	}

	ref := func(id objID, apiVersion string) corev1.ObjectReference {
		return corev1.ObjectReference{Kind: id.kind, Namespace: id.namespace, Name: id.name, APIVersion: apiVersion}
	}
	release, drifting := ref(p.release, "helm.toolkit.fluxcd.io/v2"), ref(p.drifting, "helm.toolkit.fluxcd.io/v2")
	ks := ref(p.kustomization, "kustomize.toolkit.fluxcd.io/v1")
	helmRev := map[string]string{"helm.toolkit.fluxcd.io/revision": chartVersion}
	for _, ev := range []fluxEvent{
		{InvolvedObject: release, Severity: "error", Reason: "UpgradeFailed", Metadata: helmRev, ReportingController: "helm-controller",
			Message: "Helm upgrade failed for release " + p.release.namespace + "/" + p.release.name + ": context deadline exceeded"},
		{InvolvedObject: release, Severity: "info", Reason: "RollbackSucceeded", Metadata: helmRev, ReportingController: "helm-controller",
			Message: "Helm rollback to previous release succeeded"},
		{InvolvedObject: drifting, Severity: "error", Reason: "DriftDetected", ReportingController: "helm-controller",
			Message: "Cluster state of release " + p.drifting.namespace + "/" + p.drifting.name + " has drifted from the desired state: Deployment/" + p.drifting.namespace + "/" + p.drifting.name + " changed"},
		{InvolvedObject: ks, Severity: "info", Reason: "ReconciliationSucceeded", ReportingController: "kustomize-controller",
			Metadata: map[string]string{"kustomize.toolkit.fluxcd.io/revision": ch.newRevision}, Message: "Reconciliation finished in 2.4s, next run in 10m0s"},
	} {
		ev.Timestamp = metav1.NewTime(time.Now())
		id := objID{ev.InvolvedObject.Kind, ev.InvolvedObject.Namespace, ev.InvolvedObject.Name}
		if code := post(t, main.eventURL(id), ev, key); code != http.StatusAccepted {
			t.Fatalf("event %s %s answered %d, want 202", ev.InvolvedObject.Name, ev.Reason, code)
		}
	}
	forged := fluxEvent{InvolvedObject: ks, Severity: "info", Reason: "ReconciliationSucceeded", ReportingController: "kustomize-controller",
		Timestamp: metav1.NewTime(time.Now()), Message: "signed with a stale token"}
	if code := post(t, main.exps[0].url, forged, []byte("rotated-away")); code != http.StatusUnauthorized {
		t.Fatalf("badly signed event answered %d, want 401", code)
	}
	return ch
}

// labelTeam gives the objects the label team: mixinTeam.
func labelTeam(t *testing.T, c *cluster, ids ...objID) {
	t.Helper()
	for _, id := range ids {
		patch := []byte(`{"metadata":{"labels":{"team":"` + mixinTeam + `"}}}`)
		if _, err := c.dyn.Resource(gvrs[id.kind]).Namespace(id.namespace).Patch(t.Context(), id.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("label %v: %v", id, err)
		}
	}
}

// sameShardSource finds a ready Kustomization, not the picked one, whose
// ready GitRepository with an artifact is exported by the same replica and
// is not the picked source.
func sameShardSource(t *testing.T, c *cluster, main *mainShards, p mixinPicks) (ks, src objID) {
	t.Helper()
	listed := listFluxObjects(t, c)
	repos := map[objID]*unstructured.Unstructured{}
	for i := range listed["GitRepository"] {
		u := &listed["GitRepository"][i]
		repos[idOf(u)] = u
	}
	for i := range listed["Kustomization"] {
		u := &listed["Kustomization"][i]
		kind, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "kind")
		name, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "name")
		s := objID{"GitRepository", u.GetNamespace(), name}
		repo := repos[s]
		if idOf(u) == p.kustomization || kind != "GitRepository" || repo == nil || s == p.source ||
			isSuspended(u) || isSuspended(repo) || conditionOf(u, "Ready").status != "True" || conditionOf(repo, "Ready").status != "True" {
			continue
		}
		if _, ok, _ := unstructured.NestedMap(repo.Object, "status", "artifact"); !ok {
			continue
		}
		if main.of(idOf(u)) == main.of(s) {
			return idOf(u), s
		}
	}
	t.Fatalf("fleet %+v has no ready Kustomization on the replica of its ready GitRepository", mixinFleet)
	return objID{}, objID{}
}

// mixinTeam is the team label makeChanges gives the objects it changes.
const mixinTeam = "payments"

// setReady sets the Ready condition in a status, moving its
// lastTransitionTime to at when its status changes, as the controllers do.
func setReady(st map[string]any, status, reason, msg string, at time.Time) {
	conds, _ := st["conditions"].([]any)
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != "Ready" {
			continue
		}
		if m["status"] != status {
			m["lastTransitionTime"] = at.Format(time.RFC3339)
		}
		m["status"], m["reason"], m["message"] = status, reason, msg
		return
	}
	st["conditions"] = append(conds, map[string]any{"type": "Ready", "status": status, "reason": reason, "message": msg,
		"lastTransitionTime": at.Format(time.RFC3339), "observedGeneration": int64(1)})
}

// editStatus rewrites an object's status as its controller would.
func editStatus(t *testing.T, c *cluster, id objID, edit func(status map[string]any)) {
	t.Helper()
	res := c.dyn.Resource(gvrs[id.kind]).Namespace(id.namespace)
	u, err := res.Get(t.Context(), id.name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %v: %v", id, err)
	}
	st, _ := u.Object["status"].(map[string]any)
	edit(st)
	if _, err := res.UpdateStatus(t.Context(), u, metaUpdate); err != nil {
		t.Fatalf("update status of %v: %v", id, err)
	}
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	for i := range b {
		b[i] = byte(rand.IntN(256))
	}
	return hex.EncodeToString(b)[:n]
}

// startReconcileRequests asks for a reconciliation of the objects every
// second until the test ends, as `flux reconcile` does, so that the
// controllers keep reconciling (and broken-repo keeps failing) while the
// rate panels look.
func startReconcileRequests(t *testing.T, c *cluster, ids []objID) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			for _, id := range ids {
				patch := fmt.Appendf(nil, `{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":%q}}}`, time.Now().Format(time.RFC3339Nano))
				_, err := c.dyn.Resource(gvrs[id.kind]).Namespace(id.namespace).Patch(ctx, id.name, types.MergePatchType, patch, metav1.PatchOptions{})
				if err != nil && ctx.Err() == nil {
					t.Logf("request reconciliation of %v: %v", id, err)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// Alerts.

type ruleFile struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Alert, Record, Expr, For string
		}
	}
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := fs.ReadFile(alerts.Rules, "flux-exporter.rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("decode rule file: %v", err)
	}
	return rf
}

// alertKey identifies one alert instance by the labels that tell it apart.
type alertKey struct {
	alert, instance, kind, namespace, name, controller, code string
}

func (k alertKey) String() string {
	var parts []string
	for _, f := range [][2]string{{"instance", k.instance}, {"kind", k.kind}, {"ns", k.namespace}, {"name", k.name}, {"controller", k.controller}, {"code", k.code}} {
		if f[1] != "" {
			parts = append(parts, f[0]+"="+f[1])
		}
	}
	return k.alert + "{" + strings.Join(parts, ",") + "}"
}

// expectedAlerts derives, from the objects as the API server holds them and
// from what the test did, the alerts that must be active at a given time.
// Each per-object rule is restated over the object's spec and status; each
// exporter replica raises its own copy for the objects it can see.
//
// FluxExporterCollectorFailing is the one alert no state of the cluster can
// raise: a collector fails only on a bug (a panic) or on a series that cannot
// be built (a label value that is not valid UTF-8, which the API server's
// JSON cannot carry). checkAlertExprs checks the series it reads instead.
func expectedAlerts(listed map[string][]unstructured.Unstructured, ch changes, unsynced []string,
	main *mainShards, restrictedInst, doomedInst string) func(now time.Time) map[alertKey]bool {
	// Shard 0 alone runs the controllers collector and got the forged event.
	mainInst := main.insts[0]
	return func(now time.Time) map[alertKey]bool {
		want := map[alertKey]bool{
			// Its only pod never turned ready.
			{alert: "FluxControllerDown", instance: mainInst, controller: "image-automation-controller"}: true,
			// runStuckManager hangs on one ImageRepository; the others wait.
			{alert: "FluxControllerWorkqueueBacklog", instance: mainInst, controller: "image-reflector-controller", name: "imagerepository"}: true,
			// broken-repo fails each reconciliation the requests ask for,
			// half of source-controller's work.
			{alert: "FluxControllerReconcileErrors", instance: mainInst, controller: "source-controller"}: true,
			// Stopped once Prometheus had scraped it.
			{alert: "FluxExporterDown", instance: doomedInst}: true,
			// The forged event.
			{alert: "FluxEventsRejected", instance: mainInst, code: "401"}: true,
			// From its DriftDetected event, which only the main replicas
			// receive (sharded, one that does not export it): the alert is on
			// every replica that exports the HelmRelease.
			{alert: "FluxHelmReleaseDrifted", instance: main.of(ch.drifted), kind: "HelmRelease", namespace: ch.drifted.namespace, name: ch.drifted.name}: true,
			{alert: "FluxHelmReleaseDrifted", instance: restrictedInst, kind: "HelmRelease", namespace: ch.drifted.namespace, name: ch.drifted.name}:      true,
		}
		for _, kind := range unsynced {
			want[alertKey{alert: "FluxExporterKindNotSynced", instance: restrictedInst, kind: kind}] = true
		}
		for kind, objs := range listed {
			for i := range objs {
				for _, alert := range objectAlerts(&objs[i], now) {
					id := idOf(&objs[i])
					want[alertKey{alert: alert, instance: main.of(id), kind: id.kind, namespace: id.namespace, name: id.name}] = true
					if !slices.Contains(unsynced, kind) {
						want[alertKey{alert: alert, instance: restrictedInst, kind: id.kind, namespace: id.namespace, name: id.name}] = true
					}
				}
			}
		}
		// A reference to an object that does not exist, from an object that
		// is not suspended, on the unsharded replicas that watch both kinds
		// (docs/flux-semantics.md, rule 10): a shard cannot tell.
		suspended := map[objID]bool{}
		for _, objs := range listed {
			for i := range objs {
				suspended[idOf(&objs[i])] = isSuspended(&objs[i])
			}
		}
		_, missing := expectedGraph(listed)
		for e := range missing {
			if suspended[e.from] {
				continue
			}
			k := alertKey{alert: "FluxResourceDependencyMissing", kind: e.from.kind, namespace: e.from.namespace, name: e.from.name}
			if len(main.insts) == 1 {
				k.instance = mainInst
				want[k] = true
			}
			if !slices.Contains(unsynced, e.from.kind) && !slices.Contains(unsynced, e.to.kind) {
				k.instance = restrictedInst
				want[k] = true
			}
		}
		return want
	}
}

// objectAlerts restates the per-object rules of flux-exporter.rules.yaml
// over one object.
func objectAlerts(u *unstructured.Unstructured, now time.Time) []string {
	var out []string
	suspended := isSuspended(u)
	ready, stalled, fetch := conditionOf(u, "Ready"), conditionOf(u, "Stalled"), conditionOf(u, "FetchFailed")
	failures, _, _ := unstructured.NestedInt64(u.Object, "status", "failures")
	hr := u.GetKind() == "HelmRelease"
	since, notReady := notReadySince(u)
	notReadyFor := now.Sub(since)
	deleting := u.GetDeletionTimestamp() != nil
	for alert, fires := range map[string]bool{
		"FluxResourceNotReady":           !suspended && ready.ok && notReady && ready.reason != "DependencyNotReady" && notReadyFor > max(15*time.Minute, deadline(u)),
		"FluxResourceStalled":            !suspended && stalled.status == "True",
		"FluxSourceFetchFailing":         !suspended && (sourceKinds[u.GetKind()] || fetch.status == "True") && notReady && notReadyFor > fetchFailingThreshold,
		"FluxGenerationNotObserved":      !suspended && !deleting && generationNotObserved(u),
		"FluxResourceDependencyNotReady": !suspended && ready.status == "False" && ready.reason == "DependencyNotReady",
		"FluxResourceSuspendedTooLong":   suspended,
		"FluxResourceDeletionStuck":      deleting && now.Sub(u.GetDeletionTimestamp().Time) > max(15*time.Minute, deadline(u)),
		"FluxHelmReleaseFailing":         !suspended && hr && failures > 0 && notReady && notReadyFor > 5*time.Minute,
		"FluxHelmReleaseRolledBack":      rolledBack(u) && ready.status != "True",
		"FluxHelmReleaseUninstalled":     !suspended && uninstalled(u) && ready.status != "True",
		"FluxHelmReleaseDrifted":         hr && (conditionOf(u, "Drifted").status == "True" || hasConditionReason(u, "DriftDetected")),
	} {
		if fires {
			out = append(out, alert)
		}
	}
	return out
}

// staticObject tells the objects their controller never gives a status.
func staticObject(u *unstructured.Unstructured) bool {
	typ, _, _ := unstructured.NestedString(u.Object, "spec", "type")
	return u.GetKind() == "Alert" || u.GetKind() == "Provider" || (u.GetKind() == "HelmRepository" && typ == "oci")
}

// generationNotObserved restates FluxGenerationNotObserved's condition: no
// controller has written Ready for the current generation, or, for a kind
// that gets a status at all, has written no Ready yet.
func generationNotObserved(u *unstructured.Unstructured) bool {
	ready := conditionOf(u, "Ready")
	if !ready.ok {
		return !staticObject(u)
	}
	return ready.generation != 0 && ready.generation < u.GetGeneration()
}

// checkAlerts compares the active alerts with want. Alerts with a `for`
// must be pending (none can have lasted that long), the others firing; every
// alert carries the target's cluster label and expanded annotations.
func (p *prometheusServer) checkAlerts(rules ruleFile, want map[alertKey]bool) error {
	var data struct {
		Alerts []struct {
			Labels      map[string]string
			Annotations map[string]string
			State       string
		}
	}
	if err := p.get("/api/v1/alerts", nil, &data); err != nil {
		return err
	}
	holds := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			holds[r.Alert] = r.For != "" && r.For != "0s"
		}
	}
	got := map[alertKey]bool{}
	var problems []string
	for _, a := range data.Alerts {
		l := a.Labels
		k := alertKey{alert: l["alertname"], instance: l["instance"], kind: l["kind"], namespace: l["exported_namespace"],
			name: l["name"], controller: l["controller"], code: l["code"]}
		got[k] = true
		wantState := map[bool]string{true: "pending", false: "firing"}[holds[k.alert]]
		if a.State != wantState {
			problems = append(problems, fmt.Sprintf("%s is %s, want %s", k, a.State, wantState))
		}
		if l["cluster"] != promCluster {
			problems = append(problems, fmt.Sprintf("%s has cluster %q, want %q", k, l["cluster"], promCluster))
		}
		for _, name := range []string{"summary", "description", "runbook_url"} {
			v := a.Annotations[name]
			if v == "" || strings.Contains(v, "error expanding template") || strings.Contains(v, "<no value>") {
				problems = append(problems, fmt.Sprintf("%s: annotation %s = %q", k, name, v))
			}
		}
	}
	for k := range want {
		if !got[k] {
			problems = append(problems, "missing "+k.String())
		}
	}
	for k := range got {
		if !want[k] {
			problems = append(problems, "unexpected "+k.String())
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%d active alerts, %d expected:\n%s", len(got), len(want), strings.Join(problems, "\n"))
	}
	return nil
}

// checkRuleHealth requires every rule, the override's recording rule
// included, to have evaluated without error.
func (p *prometheusServer) checkRuleHealth(t *testing.T) {
	var data struct {
		Groups []struct {
			Name  string
			Rules []struct{ Name, Health, LastError, Type string }
		}
	}
	if err := p.get("/api/v1/rules", nil, &data); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				t.Errorf("rule %s/%s (%s): health %q, last error %q", g.Name, r.Name, r.Type, r.Health, r.LastError)
			}
		}
	}
	res, err := p.query("flux:source_fetch_failing_threshold:seconds", time.Now())
	if err != nil || len(res) != 1 || res[0].Value == nil || res[0].Value.v != fetchFailingThreshold.Seconds() {
		t.Errorf("the threshold override did not record %v: %+v (err %v)", fetchFailingThreshold.Seconds(), res, err)
	}
	t.Logf("%d rules in %d groups evaluate without error", n, len(data.Groups))
}

// checkAlertExprs runs every alert's expression as an instant query.
func (p *prometheusServer) checkAlertExprs(t *testing.T, rules ruleFile) {
	// Alerts this cluster cannot raise: their expressions must parse and
	// stay empty while the series they read exist. No cluster state raises
	// FluxExporterCollectorFailing (see expectedAlerts); a deletion must be
	// pending 15 minutes, longer than this test, before
	// FluxResourceDeletionStuck fires (TestAlertTimelines proves it does,
	// kustomization-deletion).
	// No notification-controller runs here to fail a delivery;
	// TestNotificationControllerLive makes the real one fail and reads the
	// series FluxNotificationDispatchFailing needs, and
	// alerts/tests/notifications.yaml tests the rule over them.
	silent := map[string]string{
		"FluxNotificationDispatchFailing": `flux_resource_info{kind="Alert"}`,
		"FluxExporterCollectorFailing":    `flux_exporter_collector_success`,
		"FluxResourceDeletionStuck":       `flux_resource_info{kind="Kustomization"}`,
	}
	var n int
	eventually(t, 30*time.Second, func() error {
		var problems []string
		n = 0
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				n++
				res, err := p.query(r.Expr, time.Now())
				switch basis, isSilent := silent[r.Alert]; {
				case err != nil:
					t.Fatalf("%s: %v\n%s", r.Alert, err, r.Expr)
				case isSilent && anyData(res):
					problems = append(problems, fmt.Sprintf("%s returned %d series", r.Alert, len(res)))
				case isSilent:
					if b, err := p.query(basis, time.Now()); err != nil || !anyData(b) {
						problems = append(problems, fmt.Sprintf("%s: no %s (err %v)", r.Alert, basis, err))
					}
				case !anyData(res):
					problems = append(problems, r.Alert+" returned no data")
				}
			}
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "\n"))
		}
		return nil
	})
	t.Logf("%d alert expressions parse; all but %v return data", n, slices.Sorted(maps.Keys(silent)))
}

// Dashboards.

type dashboard struct {
	UID         string
	Title       string
	Templating  struct{ List []dashVar }
	Annotations struct {
		List []struct{ Name, Expr string }
	}
	Panels []dashPanel
}

type dashVar struct {
	Name, Type string
	Query      json.RawMessage
	IncludeAll bool
	AllValue   string
}

// query is the variable's PromQL query, stored as a string or, by newer
// Grafana versions, as an object.
func (v dashVar) query() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct{ Query string }
	_ = json.Unmarshal(v.Query, &o)
	return o.Query
}

type dashPanel struct {
	Title   string
	Targets []struct {
		RefID          string
		Expr           string
		Instant, Range bool
	}
	Panels []dashPanel // a collapsed row's
}

func loadDashboards(t *testing.T) []dashboard {
	t.Helper()
	names, err := fs.Glob(dashboards.Files, "*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no dashboards embedded (%v)", err)
	}
	var out []dashboard
	for _, name := range names {
		b, err := fs.ReadFile(dashboards.Files, name)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("decode %s: %v", name, err)
		}
		out = append(out, d)
	}
	return out
}

// dashQuery is one target or annotation of a dashboard.
type dashQuery struct {
	what     string // panel title and refId, or annotation name
	expr     string
	instant  bool
	rangeQry bool
	// optIn are the opt-in families the query reads: a panel's optional
	// target, which shows nothing on the default set (the dashboards
	// package's TestOptionalTargets).
	optIn []string
}

// familyName finds the family names in a query.
var familyName = regexp.MustCompile(`\bflux_[a-z0-9_]+`)

// optInFamilies are the families the catalogue marks opt-in.
var optInFamilies = func() map[string]bool {
	out := map[string]bool{}
	for _, f := range collector.Families() {
		if f.OptIn {
			out[f.Name] = true
		}
	}
	return out
}()

func readsOptIn(expr string) []string {
	var out []string
	for _, n := range familyName.FindAllString(expr, -1) {
		if optInFamilies[n] && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func (d dashboard) queries() []dashQuery {
	var out []dashQuery
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				// Grafana runs a range query unless only instant is asked for.
				out = append(out, dashQuery{what: p.Title + " " + tg.RefID, expr: tg.Expr, instant: tg.Instant, rangeQry: tg.Range || !tg.Instant, optIn: readsOptIn(tg.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		if a.Expr != "" { // the built-in annotation has no query
			out = append(out, dashQuery{what: "annotation " + a.Name, expr: a.Expr, rangeQry: true})
		}
	}
	return out
}

// varSet is one choice of the dashboard's variables.
type varSet struct {
	name  string
	fixed map[string]string // variable -> value; the rest take their default
}

// checkDashboards runs every panel target and annotation of every dashboard
// with the variables as Grafana resolves them: each variable's own query
// must list values, variables with "All" take its value, and the resource
// detail dashboard is shown for two objects, a target passing when it has
// data for either. An optional target, on opt-in families, must run and
// show nothing, as its panel's description says of the default set.
func (p *prometheusServer) checkDashboards(t *testing.T, picks mixinPicks) {
	detailSets := []varSet{
		{"HelmRelease " + picks.release.name, map[string]string{"namespace": picks.release.namespace, "kind": picks.release.kind, "name": picks.release.name}},
		{"Kustomization " + picks.kustomization.name, map[string]string{"namespace": picks.kustomization.namespace, "kind": picks.kustomization.kind, "name": picks.kustomization.name}},
	}
	for _, d := range loadDashboards(t) {
		t.Run(d.UID, func(t *testing.T) {
			sets := []varSet{{name: "defaults"}}
			if d.UID == "flux-resource-detail" {
				sets = detailSets
			}
			vals := make([]map[string]string, len(sets))
			for i, s := range sets {
				vals[i] = p.resolveVariables(t, d, s)
			}
			queries := d.queries()
			// Bounded polling for the rate windows and the last scrapes to
			// fill; a query error fails at once.
			var report []string
			eventually(t, 30*time.Second, func() error {
				report = report[:0]
				var empty, unexpected []string
				for _, q := range queries {
					var hits []string
					for i, s := range sets {
						if n := p.runDashQuery(t, d.UID, q, vals[i]); n > 0 {
							hits = append(hits, fmt.Sprintf("%s: %d series", s.name, n))
						}
					}
					switch {
					case len(q.optIn) > 0 && len(hits) > 0:
						unexpected = append(unexpected, q.what)
					case len(q.optIn) > 0:
						hits = append(hits, fmt.Sprintf("optional, opt-in %v", q.optIn))
					case len(hits) == 0:
						empty = append(empty, q.what)
					}
					report = append(report, fmt.Sprintf("%-55s %s", q.what, strings.Join(hits, "; ")))
				}
				if len(unexpected) > 0 {
					t.Fatalf("data on the default set for %s, which read opt-in families", strings.Join(unexpected, ", "))
				}
				if len(empty) > 0 {
					return fmt.Errorf("no data for %s", strings.Join(empty, ", "))
				}
				return nil
			})
			t.Logf("%s: %d queries, each with data\n%s", d.Title, len(queries), strings.Join(report, "\n"))
		})
	}
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\((.+),\s*(\w+)\)\s*$`)

// resolveVariables runs each variable's query in dashboard order, the
// earlier values substituted, as Grafana does on load.
func (p *prometheusServer) resolveVariables(t *testing.T, d dashboard, set varSet) map[string]string {
	t.Helper()
	// Range queries cover at most 5m, and so does $__range.
	vals := map[string]string{"__interval": "1s", "__rate_interval": rateInterval, "__range": "5m", "__range_s": "300"}
	end := time.Now()
	for _, v := range d.Templating.List {
		if v.Type == "datasource" {
			continue
		}
		if v.Type != "query" {
			t.Fatalf("%s: variable %s has type %q, which this test cannot resolve", d.UID, v.Name, v.Type)
		}
		m := labelValuesRE.FindStringSubmatch(v.query())
		if m == nil {
			t.Fatalf("%s: variable %s: query %q is not label_values(selector, label)", d.UID, v.Name, v.query())
		}
		selector, err := interpolate(m[1], vals)
		if err != nil {
			t.Fatalf("%s: variable %s: %v", d.UID, v.Name, err)
		}
		var options []string
		params := url.Values{"match[]": {selector}, "start": {promTime(p.started)}, "end": {promTime(end)}}
		if err := p.get("/api/v1/label/"+m[2]+"/values", params, &options); err != nil {
			t.Fatalf("%s: variable %s: %v", d.UID, v.Name, err)
		}
		if len(options) == 0 {
			t.Fatalf("%s: variable %s lists no values for %s", d.UID, v.Name, selector)
		}
		switch fixed, ok := set.fixed[v.Name]; {
		case ok && !slices.Contains(options, fixed):
			t.Fatalf("%s: variable %s does not offer %q: %v", d.UID, v.Name, fixed, options)
		case ok:
			vals[v.Name] = fixed
		case v.IncludeAll && v.AllValue != "":
			vals[v.Name] = v.AllValue
		default:
			vals[v.Name] = options[0]
		}
	}
	return vals
}

var varRefRE = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]`)

// interpolate substitutes Grafana's variable references; an unknown one is
// an error, since Grafana would send it to Prometheus verbatim.
func interpolate(expr string, vals map[string]string) (string, error) {
	var unknown []string
	out := varRefRE.ReplaceAllStringFunc(expr, func(ref string) string {
		m := varRefRE.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		v, ok := vals[name]
		if !ok {
			unknown = append(unknown, ref)
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown variables %v in %s", unknown, expr)
	}
	return out, nil
}

// fallbackRE matches a count panel's `or vector(0)`, which shows 0 rather
// than "No data": it answers on any cluster and proves nothing.
var fallbackRE = regexp.MustCompile(`(?s)^(.*\S)\s+or\s+vector\(0\)\s*$`)

// runDashQuery runs one dashboard query with these values and returns how
// many series have a sample that is a number. It fails the test on a query
// error. Range queries cover Prometheus's whole life (at most 5m) at a 1s
// step, so $__interval is 1s. That includes the annotations, which Grafana
// steps at their 60s minimum: on a Prometheus a minute old that would leave
// two points, and the step only sets how finely a change is placed.
func (p *prometheusServer) runDashQuery(t *testing.T, uid string, q dashQuery, vals map[string]string) int {
	t.Helper()
	expr, err := interpolate(q.expr, vals)
	if err != nil {
		t.Fatalf("%s %s: %v", uid, q.what, err)
	}
	check := []string{expr}
	if m := fallbackRE.FindStringSubmatch(expr); m != nil {
		check = append(check, m[1])
	}
	end := time.Now()
	start := end.Add(-5 * time.Minute)
	if start.Before(p.started) {
		start = p.started
	}
	n := 0
	for i, e := range check {
		var got []promSeries
		if q.instant {
			res, err := p.query(e, end)
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", uid, q.what, err, e)
			}
			got = append(got, res...)
		}
		if q.rangeQry {
			res, err := p.queryRange(e, start, end, time.Second)
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", uid, q.what, err, e)
			}
			got = append(got, res...)
		}
		if i == len(check)-1 {
			n = countData(got)
		}
	}
	return n
}

// checkChangeAnnotations checks that the revision annotation, the one users
// copy into their own dashboards, marks the revision applied during the run
// after it was applied, and the release annotation the new Helm release.
func (p *prometheusServer) checkChangeAnnotations(t *testing.T, picks mixinPicks, ch changes) {
	var overview dashboard
	for _, d := range loadDashboards(t) {
		if d.UID == "flux-fleet-overview" {
			overview = d
		}
	}
	vals := p.resolveVariables(t, overview, varSet{name: "defaults"})
	for _, a := range overview.Annotations.List {
		var match func(map[string]string) bool
		var since time.Time
		switch a.Name {
		case "Flux revisions":
			match = func(l map[string]string) bool {
				return l["kind"] == "Kustomization" && l["name"] == picks.kustomization.name && l["revision"] == ch.newRevision
			}
			since = ch.revisedAt
		case "Helm releases":
			match = func(l map[string]string) bool {
				return l["exported_namespace"] == picks.release.namespace && l["name"] == picks.release.name
			}
			since = ch.releasedAt
		default:
			continue
		}
		expr, err := interpolate(a.Expr, vals)
		if err != nil {
			t.Fatal(err)
		}
		res, err := p.queryRange(expr, p.started, time.Now(), time.Second)
		if err != nil {
			t.Fatalf("%s: %v", a.Name, err)
		}
		var marks []time.Time
		for _, s := range res {
			if !match(s.Metric) {
				continue
			}
			for _, smp := range s.Values {
				if !math.IsNaN(smp.v) {
					marks = append(marks, smp.at)
				}
			}
		}
		// The change lands in Prometheus with the next scrape, up to a
		// second later; the server stores whole seconds.
		if len(marks) == 0 || marks[0].Before(since.Add(-time.Second)) {
			t.Errorf("annotation %q: marks %v for the change made at %s", a.Name, marks, since.Format(time.RFC3339Nano))
			continue
		}
		t.Logf("annotation %q marks the change made at %s at %v", a.Name, since.Format(time.RFC3339), marks)
	}
}

// Prometheus.

type prometheusServer struct {
	t       *testing.T
	cmd     *exec.Cmd
	logs    *syncBuffer
	url     string
	started time.Time
	done    chan error
}

// startPrometheus runs Debian's prometheus on a free 127.0.0.1 port,
// scraping the targets every second as job flux-exporter, with the shipped
// rule file and the threshold override. It is stopped when the test ends.
func startPrometheus(t *testing.T, bin string, targets []string) *prometheusServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := fs.ReadFile(alerts.Rules, "flux-exporter.rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(dir, "flux-exporter.rules.yaml")
	if err := os.WriteFile(rulesPath, rules, 0o600); err != nil {
		t.Fatal(err)
	}
	override, err := filepath.Abs(filepath.Join("testdata", "mixin", "overrides.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := yaml.Marshal(map[string]any{
		"global": map[string]any{"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
		// External labels never reach PromQL; a target label gives
		// $cluster a value and the joins a cluster to keep.
		"rule_files": []string{rulesPath, override},
		"scrape_configs": []any{map[string]any{
			"job_name":       promJob,
			"static_configs": []any{map[string]any{"targets": targets, "labels": map[string]string{"cluster": promCluster}}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddress(t)
	p := &prometheusServer{t: t, logs: &syncBuffer{}, url: "http://" + addr, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(p.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-p.done:
			t.Fatalf("prometheus exited (%v):\n%s", err, p.logs)
		case <-time.After(100 * time.Millisecond):
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30s:\n%s", p.logs)
		}
	}
}

func (p *prometheusServer) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("prometheus ignored SIGTERM for 15s:\n%s", p.logs)
	}
}

// freeAddress is a 127.0.0.1 address nothing listens on at the moment.
func freeAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func promTime(at time.Time) string {
	return strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)
}

// get calls the HTTP API and decodes its data into out.
func (p *prometheusServer) get(path string, params url.Values, out any) error {
	u := p.url + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("%s answered %d: %s", path, resp.StatusCode, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.ErrorType, env.Error)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

type promSample struct {
	at time.Time
	v  float64
}

func (s *promSample) UnmarshalJSON(b []byte) error {
	var raw [2]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	var ts float64
	var v string
	if err := json.Unmarshal(raw[0], &ts); err != nil {
		return err
	}
	if err := json.Unmarshal(raw[1], &v); err != nil {
		return err
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return err
	}
	s.at, s.v = time.UnixMilli(int64(math.Round(ts*1000))), f
	return nil
}

type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  *promSample       `json:"value"`
	Values []promSample      `json:"values"`
}

// countData counts the series with at least one sample that is a number.
func countData(series []promSeries) int {
	n := 0
	for _, s := range series {
		samples := s.Values
		if s.Value != nil {
			samples = append(samples, *s.Value)
		}
		if slices.ContainsFunc(samples, func(smp promSample) bool { return !math.IsNaN(smp.v) }) {
			n++
		}
	}
	return n
}

func anyData(series []promSeries) bool { return countData(series) > 0 }

func (p *prometheusServer) query(expr string, at time.Time) ([]promSeries, error) {
	return p.evaluate("/api/v1/query", url.Values{"query": {expr}, "time": {promTime(at)}})
}

func (p *prometheusServer) queryRange(expr string, start, end time.Time, step time.Duration) ([]promSeries, error) {
	return p.evaluate("/api/v1/query_range", url.Values{"query": {expr}, "start": {promTime(start)}, "end": {promTime(end)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}})
}

func (p *prometheusServer) evaluate(path string, params url.Values) ([]promSeries, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get(path, params, &data); err != nil {
		return nil, err
	}
	if data.ResultType == "scalar" {
		var s promSample
		if err := json.Unmarshal(data.Result, &s); err != nil {
			return nil, err
		}
		return []promSeries{{Value: &s}}, nil
	}
	var out []promSeries
	if err := json.Unmarshal(data.Result, &out); err != nil {
		return nil, fmt.Errorf("decode %s result: %w", data.ResultType, err)
	}
	return out, nil
}
