package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

// The delivery families (docs/delivery.md) against a real API server: one
// Kustomization and one HelmRelease go through a new source artifact, a
// successful apply, a failing change, a rollback (a revert for the
// Kustomization, a Helm rollback for the HelmRelease) and a recovery, with
// statuses written as kustomize-controller and helm-controller write them.
// After every step each per-object family's value is checked, and the
// namespace group's, which holds this one object of its kind. What a
// restarted exporter counts is TestDeliveryRestart's.

// deliveryBase is the time the story starts, set when the exporter has
// started, since it counts only what Flux records after its start; every
// status time is an offset from it, so lead times and restore times are
// exact.
var deliveryBase time.Time

func dAt(offset time.Duration) string { return deliveryBase.Add(offset).Format(time.RFC3339) }

const (
	dRevA = "main@sha1:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dRevB = "main@sha1:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	dRevC = "main@sha1:cccccccccccccccccccccccccccccccccccccccc" // reverts B
	dRevD = "main@sha1:dddddddddddddddddddddddddddddddddddddddd"
)

func deliveryGitRepo(rev string, updated time.Duration) string {
	return fmt.Sprintf(`
observedGeneration: 1
conditions:
- {type: Ready, status: "True", reason: Succeeded, message: "stored artifact for revision '%[1]s'", lastTransitionTime: %[2]q, observedGeneration: 1}
artifact:
  path: gitrepository/shop/app/x.tar.gz
  url: http://source-controller.flux-system.svc.cluster.local./gitrepository/shop/app/x.tar.gz
  revision: %[1]q
  digest: sha256:9d6c0a3b4e8f7a6d5c4b3a29180f7e6d5c4b3a2918070f6e5d4c3b2a1908f7e6
  size: 1024
  lastUpdateTime: %[2]q
`, rev, dAt(updated))
}

func deliveryHelmChart(version string, updated time.Duration) string {
	return fmt.Sprintf(`
observedGeneration: 1
conditions:
- {type: Ready, status: "True", reason: ChartPullSucceeded, message: "pulled 'web' chart with version '%[1]s'", lastTransitionTime: %[2]q, observedGeneration: 1}
artifact:
  path: helmchart/shop/shop-web/web-%[1]s.tgz
  url: http://source-controller.flux-system.svc.cluster.local./helmchart/shop/shop-web/web-%[1]s.tgz
  revision: %[1]q
  digest: sha256:1d6c0a3b4e8f7a6d5c4b3a29180f7e6d5c4b3a2918070f6e5d4c3b2a1908f7e6
  size: 2048
  lastUpdateTime: %[2]q
`, version, dAt(updated))
}

// ksHist is a Kustomization history entry as fluxcd/pkg apis/meta
// History.Upsert leaves it.
func ksHist(digest, status, rev string, first, last time.Duration) string {
	return fmt.Sprintf(`
- {digest: %q, firstReconciled: %q, lastReconciled: %q, lastReconciledDuration: 2.1s, lastReconciledStatus: %s, totalReconciliations: 1, metadata: {revision: %q}}`,
		digest, dAt(first), dAt(last), status, rev)
}

func deliveryKustomization(applied, attempted, ready, reason string, since time.Duration, history ...string) string {
	s := fmt.Sprintf(`
observedGeneration: 1
lastAttemptedRevision: %q
conditions:
- {type: Ready, status: %q, reason: %s, message: "%s", lastTransitionTime: %q, observedGeneration: 1}
`, attempted, ready, reason, reason, dAt(since))
	if applied != "" {
		s += fmt.Sprintf("lastAppliedRevision: %q\n", applied)
	}
	if len(history) > 0 {
		s += "history:" + strings.ReplaceAll(strings.Join(history, ""), "\n", "\n") + "\n"
	}
	return s
}

// hrHist is a HelmRelease history snapshot as helm-controller records it:
// Helm copies the first install's firstDeployed (2 minutes in) into every
// version; lastDeployed is when the version was deployed.
func hrHist(version int, status, action, chart string, deployed time.Duration) string {
	return fmt.Sprintf(`
- {name: web, namespace: shop, version: %d, status: %s, action: %q, chartName: web, chartVersion: %q, appVersion: %q, configDigest: "sha256:c0", digest: "sha256:d%d", firstDeployed: %q, lastDeployed: %q}`,
		version, status, action, chart, chart, version, dAt(2*time.Minute), dAt(deployed))
}

func deliveryHelmRelease(attempted string, conds []string, history ...string) string {
	s := fmt.Sprintf(`
observedGeneration: 1
helmChart: shop/shop-web
lastAttemptedRevision: %q
conditions:`, attempted)
	for _, c := range conds {
		f := strings.Split(c, " ")
		s += fmt.Sprintf("\n- {type: %s, status: %q, reason: %s, message: %s, lastTransitionTime: %q, observedGeneration: 1}", f[0], f[1], f[2], f[2], f[3])
	}
	if len(history) > 0 {
		s += "\nhistory:" + strings.Join(history, "")
	}
	return s + "\n"
}

// setStatus writes an object's status through the status subresource.
func (c *cluster) setStatus(t *testing.T, kind, ns, name, status string) {
	t.Helper()
	var st map[string]any
	if err := yaml.Unmarshal([]byte(status), &st); err != nil {
		t.Fatalf("bad status for %s %s: %v\n%s", kind, name, err, status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := c.dyn.Resource(gvrs[kind]).Namespace(ns)
	cur, err := res.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Object["status"] = st
	if _, err := res.UpdateStatus(ctx, cur, metaUpdate); err != nil {
		t.Fatalf("update status of %s %s: %v", kind, name, err)
	}
}

// deliveryValues are an object's delivery series in one scrape, keyed as
// in docs/delivery.md; absent series are missing from the map.
func deliveryValues(s scrape, kind, name string) map[string]float64 {
	id := map[string]string{"kind": kind, "name": name, "exported_namespace": "shop"}
	out := countsOf(s, "flux_resource_delivery_", id)
	for _, m := range s.find("flux_delivery_last_rollback_info", id) {
		l := labels(m)
		out[fmt.Sprintf("last_rollback{%s,%s,%s,%s}", l["failed_version"], l["failed_chart_version"], l["rollback_version"], l["restored_chart_version"])] = 1
	}
	return out
}

// countsOf reads the counters and histograms of the delivery families
// named prefix+changes_total and so on, of the series with the labels of
// id, keyed as in docs/delivery.md.
func countsOf(s scrape, prefix string, id map[string]string) map[string]float64 {
	out := map[string]float64{}
	for _, r := range []string{"succeeded", "failed"} {
		if v, ok := s.value(prefix+"changes_total", with(id, map[string]string{"result": r})); ok {
			out["changes_"+r] = v
		}
	}
	for key, fam := range map[string]string{"failed_changes": "failed_changes_total", "rollbacks": "rollbacks_total"} {
		if v, ok := s.value(prefix+fam, id); ok {
			out[key] = v
		}
	}
	for key, fam := range map[string]string{"lead": "lead_time_seconds", "restore": "time_to_restore_seconds"} {
		if ms := s.find(prefix+fam, id); len(ms) == 1 && ms[0].Histogram != nil {
			out[key+"_count"] = float64(ms[0].GetHistogram().GetSampleCount())
			out[key+"_sum"] = ms[0].GetHistogram().GetSampleSum()
		}
	}
	return out
}

// expectDelivery waits until the object's delivery series are exactly
// want, and its namespace group's too: the object is the only one of its
// kind in the namespace.
func expectDelivery(t *testing.T, e *exporter, step, kind, name string, want map[string]float64) {
	t.Helper()
	eventually(t, 15*time.Second, func() error {
		s := e.scrape()
		got := deliveryValues(s, kind, name)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("%s: %s %s delivery series\n got %v\nwant %v", step, kind, name, got, want)
		}
		group := countsOf(s, "flux_delivery_", map[string]string{"kind": kind, "exported_namespace": "shop"})
		for k, v := range want {
			if g, ok := group[k]; !strings.HasPrefix(k, "last_rollback") && (!ok || g != v) {
				return fmt.Errorf("%s: %s group of shop: %s is %v, want %v as its one object's", step, kind, k, g, v)
			}
		}
		return nil
	})
}

func TestDeliveryKeys(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	first := startExporter(t, c.kubeconfig)
	first.waitReady()
	deliveryBase = time.Now().Truncate(time.Second).Add(time.Second)

	// Step 1: a new source artifact; nothing consumes it yet.
	c.apply(t, []byte(`
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: app, namespace: shop}
spec: {interval: 1m, url: "https://git.example.com/shop/app", ref: {branch: main}}
status:`+indent(deliveryGitRepo(dRevA, 0))))
	c.apply(t, []byte(`
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: app, namespace: shop}
spec: {interval: 5m, path: ./deploy, prune: true, sourceRef: {kind: GitRepository, name: app}}
status:`+indent(deliveryKustomization("", dRevA, "Unknown", "Progressing", 30*time.Second))))
	c.apply(t, []byte(`
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmChart
metadata: {name: shop-web, namespace: shop}
spec: {interval: 5m, chart: web, sourceRef: {kind: HelmRepository, name: charts}}
status:`+indent(deliveryHelmChart("1.0.0", 0))))
	c.apply(t, []byte(`
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web, namespace: shop}
spec:
  interval: 5m
  chart: {spec: {chart: web, sourceRef: {kind: HelmRepository, name: charts}}}
  upgrade: {remediation: {retries: 1, remediateLastFailure: true, strategy: rollback}}
status:`+indent(deliveryHelmRelease("1.0.0", []string{"Ready Unknown Progressing " + dAt(30*time.Second)}))))
	zero := map[string]float64{"changes_succeeded": 0, "changes_failed": 0, "failed_changes": 0, "lead_count": 0, "lead_sum": 0, "restore_count": 0, "restore_sum": 0}
	expectDelivery(t, first, "new artifact", "Kustomization", "app", zero)
	expectDelivery(t, first, "new artifact", "HelmRelease", "web", with2(zero, map[string]float64{"rollbacks": 0}))

	// Step 2: a successful apply, 90 s after the artifact; the release
	// installed 2 min after the chart.
	c.setStatus(t, "Kustomization", "shop", "app", deliveryKustomization(dRevA, dRevA, "True", "ReconciliationSucceeded", 90*time.Second,
		ksHist("sha256:d1", "ReconciliationSucceeded", dRevA, 90*time.Second, 90*time.Second)))
	c.setStatus(t, "HelmRelease", "shop", "web", deliveryHelmRelease("1.0.0",
		[]string{"Ready True InstallSucceeded " + dAt(2*time.Minute), "Released True InstallSucceeded " + dAt(2*time.Minute)},
		hrHist(1, "deployed", "install", "1.0.0", 2*time.Minute)))
	expectDelivery(t, first, "applied", "Kustomization", "app", with2(zero, map[string]float64{"changes_succeeded": 1, "lead_count": 1, "lead_sum": 90}))
	expectDelivery(t, first, "installed", "HelmRelease", "web", with2(zero, map[string]float64{"changes_succeeded": 1, "lead_count": 1, "lead_sum": 120, "rollbacks": 0}))

	// Step 3: a failing change. Commit B fails its health check at 1h06m;
	// chart 2.0.0 fails to upgrade at 1h05m.
	c.setStatus(t, "GitRepository", "shop", "app", deliveryGitRepo(dRevB, time.Hour))
	c.setStatus(t, "Kustomization", "shop", "app", deliveryKustomization(dRevA, dRevB, "False", "HealthCheckFailed", time.Hour+6*time.Minute,
		ksHist("sha256:d2", "HealthCheckFailed", dRevB, time.Hour+time.Minute, time.Hour+6*time.Minute),
		ksHist("sha256:d1", "ReconciliationSucceeded", dRevA, 90*time.Second, 55*time.Minute)))
	c.setStatus(t, "HelmChart", "shop", "shop-web", deliveryHelmChart("2.0.0", time.Hour))
	c.setStatus(t, "HelmRelease", "shop", "web", deliveryHelmRelease("2.0.0",
		[]string{"Ready False UpgradeFailed " + dAt(time.Hour+5*time.Minute), "Released False UpgradeFailed " + dAt(time.Hour+5*time.Minute)},
		hrHist(2, "failed", "upgrade", "2.0.0", time.Hour+5*time.Minute),
		hrHist(1, "deployed", "install", "1.0.0", 2*time.Minute)))
	ksFailing := with2(zero, map[string]float64{"changes_succeeded": 1, "changes_failed": 1, "failed_changes": 1, "lead_count": 1, "lead_sum": 90})
	hrFailing := with2(zero, map[string]float64{"changes_succeeded": 1, "changes_failed": 1, "failed_changes": 1, "lead_count": 1, "lead_sum": 120, "rollbacks": 0})
	expectDelivery(t, first, "failing change", "Kustomization", "app", ksFailing)
	expectDelivery(t, first, "failing upgrade", "HelmRelease", "web", hrFailing)

	// Step 4: a rollback. The Kustomization's source reverts B (commit C
	// builds the manifests of A, digest d1, whose entry Upsert updates in
	// place: no new change) and it is Ready at 1h30m, 24 min after it
	// failed. helm-controller rolls back at 1h08m: release 3 restores chart
	// 1.0.0, and Remediated=True ends the outage begun at 1h05m.
	c.setStatus(t, "GitRepository", "shop", "app", deliveryGitRepo(dRevC, time.Hour+28*time.Minute))
	c.setStatus(t, "Kustomization", "shop", "app", deliveryKustomization(dRevC, dRevC, "True", "ReconciliationSucceeded", time.Hour+30*time.Minute,
		ksHist("sha256:d1", "ReconciliationSucceeded", dRevC, 90*time.Second, time.Hour+30*time.Minute),
		ksHist("sha256:d2", "HealthCheckFailed", dRevB, time.Hour+time.Minute, time.Hour+6*time.Minute)))
	c.setStatus(t, "HelmRelease", "shop", "web", deliveryHelmRelease("2.0.0",
		[]string{"Ready False RollbackSucceeded " + dAt(time.Hour+5*time.Minute), "Released False UpgradeFailed " + dAt(time.Hour+5*time.Minute), "Remediated True RollbackSucceeded " + dAt(time.Hour+8*time.Minute)},
		hrHist(3, "deployed", "rollback", "1.0.0", time.Hour+8*time.Minute),
		hrHist(2, "failed", "upgrade", "2.0.0", time.Hour+5*time.Minute),
		hrHist(1, "superseded", "rollback", "1.0.0", 2*time.Minute)))
	ksReverted := with2(ksFailing, map[string]float64{"restore_count": 1, "restore_sum": 24 * 60})
	hrRolledBack := with2(hrFailing, map[string]float64{"changes_succeeded": 2, "rollbacks": 1, "restore_count": 1, "restore_sum": 3 * 60, "last_rollback{2,2.0.0,3,1.0.0}": 1})
	expectDelivery(t, first, "reverted", "Kustomization", "app", ksReverted)
	expectDelivery(t, first, "rolled back", "HelmRelease", "web", hrRolledBack)

	// Step 5: recovery, a fixed change. Commit D (new manifests) applied
	// 4 min after its artifact; chart 2.0.1 released 6 min after its (by
	// lastDeployed: firstDeployed is still the first install's).
	c.setStatus(t, "GitRepository", "shop", "app", deliveryGitRepo(dRevD, 2*time.Hour))
	c.setStatus(t, "Kustomization", "shop", "app", deliveryKustomization(dRevD, dRevD, "True", "ReconciliationSucceeded", time.Hour+30*time.Minute,
		ksHist("sha256:d3", "ReconciliationSucceeded", dRevD, 2*time.Hour+4*time.Minute, 2*time.Hour+4*time.Minute),
		ksHist("sha256:d1", "ReconciliationSucceeded", dRevC, 90*time.Second, time.Hour+30*time.Minute),
		ksHist("sha256:d2", "HealthCheckFailed", dRevB, time.Hour+time.Minute, time.Hour+6*time.Minute)))
	c.setStatus(t, "HelmChart", "shop", "shop-web", deliveryHelmChart("2.0.1", 2*time.Hour))
	c.setStatus(t, "HelmRelease", "shop", "web", deliveryHelmRelease("2.0.1",
		[]string{"Ready True UpgradeSucceeded " + dAt(2*time.Hour+6*time.Minute), "Released True UpgradeSucceeded " + dAt(2*time.Hour+6*time.Minute)},
		hrHist(4, "deployed", "upgrade", "2.0.1", 2*time.Hour+6*time.Minute),
		hrHist(3, "superseded", "", "1.0.0", time.Hour+8*time.Minute)))
	ksRecovered := with2(ksReverted, map[string]float64{"changes_succeeded": 2, "lead_count": 2, "lead_sum": 90 + 4*60})
	hrRecovered := with2(hrRolledBack, map[string]float64{"changes_succeeded": 3, "lead_count": 2, "lead_sum": 120 + 6*60})
	expectDelivery(t, first, "recovered", "Kustomization", "app", ksRecovered)
	expectDelivery(t, first, "recovered", "HelmRelease", "web", hrRecovered)

	// A deleted object leaves no delivery series behind.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.dyn.Resource(gvrs["HelmRelease"]).Namespace("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expectDelivery(t, first, "deleted", "HelmRelease", "web", map[string]float64{})
}

// indent turns a YAML block into the value of a "status:" key.
func indent(block string) string {
	return strings.ReplaceAll("\n"+strings.TrimPrefix(block, "\n"), "\n", "\n  ")
}

func with2(base, extra map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// deliveryTotals adds each delivery family up over the fleet: counters by
// value, histograms by observation count.
func deliveryTotals(s scrape) map[string]float64 {
	out := map[string]float64{}
	for _, name := range []string{"flux_delivery_changes_total", "flux_delivery_failed_changes_total", "flux_delivery_rollbacks_total",
		"flux_delivery_lead_time_seconds", "flux_delivery_time_to_restore_seconds"} {
		for _, m := range s.find(name, nil) {
			switch {
			case m.Counter != nil:
				out[name] += m.GetCounter().GetValue()
			case m.Histogram != nil:
				out[name] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestChurnMovesTheDeliveryKeys: the sandbox's churn, which the demo runs,
// makes every delivery key of the default set move: changes, failed
// changes, lead times and restores, as the exporter reads them from what
// churn writes.
func TestChurnMovesTheDeliveryKeys(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	f, err := fleet.Generate(fleet.Options{Seed: 3, Objects: 150, Namespaces: 3, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := fleet.Apply(ctx, c.srv.RESTConfig(), f); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, c.kubeconfig, defaultFamilies)
	e.waitReady()
	// The fleet's histories were written before the exporter started:
	// that is what a restarted exporter finds, and counting it again
	// would add phantom changes to the counters' increase.
	before := deliveryTotals(e.scrape())
	for name, v := range before {
		if v != 0 {
			t.Fatalf("a fresh exporter counts what status.history held before it started: %s = %v", name, v)
		}
	}
	if _, ok := before["flux_delivery_changes_total"]; !ok {
		t.Fatalf("no delivery group series for the fleet: %v", before)
	}
	stats, err := fleet.Churn(ctx, c.srv.RESTConfig(), f, fleet.ChurnOptions{
		Interval: 50 * time.Millisecond, Seed: 11, ChangesPerTick: 3, Ticks: 60, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("churn: %+v", stats)
	eventually(t, 30*time.Second, func() error {
		after := deliveryTotals(e.scrape())
		for _, name := range []string{"flux_delivery_changes_total", "flux_delivery_failed_changes_total",
			"flux_delivery_lead_time_seconds", "flux_delivery_time_to_restore_seconds"} {
			if after[name] <= before[name] {
				return fmt.Errorf("%s did not move: %v before churn, %v after (churn %+v)", name, before[name], after[name], stats)
			}
		}
		t.Logf("before churn %v, after %v", before, after)
		return nil
	})
}
