package collector

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// decodeInto decodes a YAML object with the Decoder tr, whose delivery
// tracker it feeds.
func decodeInto(t *testing.T, tr *Decoder, doc string) *Record {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatalf("bad test object: %v", err)
	}
	u := &unstructured.Unstructured{Object: obj}
	acc, errs := tr.Decode(kube.Kind{Kind: u.GetKind()}, u, nil)
	if len(errs) > 0 {
		t.Fatalf("decode faults: %v", errs)
	}
	return acc
}

// deliverySamples renders a record's delivery series in the text format
// and reads them back as "name{labels}" → value.
func deliverySamples(t *testing.T, rec *Record) map[string]float64 {
	t.Helper()
	d := rec.delivery.record()
	if d == nil {
		t.Fatalf("%s/%s has no delivery series", rec.Namespace, rec.Name)
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := writeObjects(w, []*Record{d}, textFloat); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	out := map[string]float64{}
	for _, line := range strings.Split(buf.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q: %v", line, err)
		}
		// Keep only the labels that are not the object's, for short keys.
		key := line[:i]
		if open := strings.IndexByte(key, '{'); open >= 0 {
			name, labels := key[:open], strings.TrimSuffix(key[open+1:], "}")
			var keep []string
			for _, l := range strings.Split(labels, ",") {
				if !strings.HasPrefix(l, "exported_namespace=") && !strings.HasPrefix(l, "kind=") && !strings.HasPrefix(l, "name=") {
					keep = append(keep, l)
				}
			}
			key = name
			if len(keep) > 0 {
				key += "{" + strings.Join(keep, ",") + "}"
			}
		}
		out[key] = v
	}
	return out
}

// expectSamples fails for each want key whose value differs.
func expectSamples(t *testing.T, step string, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: no series %s; have %v", step, k, got)
			continue
		}
		if g != v {
			t.Errorf("%s: %s = %v, want %v", step, k, g, v)
		}
	}
}

var t0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

func at(offset time.Duration) string { return t0.Add(offset).Format(time.RFC3339) }

func gitRepo(revision string, updated time.Duration) string {
	return fmt.Sprintf(`
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: app, namespace: team-a, uid: g1}
status:
  artifact: {revision: %q, lastUpdateTime: %q}
`, revision, at(updated))
}

// ksEntry is one status.history entry as kustomize-controller writes it.
func ksEntry(digest, status, revision string, first, last time.Duration) string {
	return fmt.Sprintf(`
  - digest: %s
    firstReconciled: %q
    lastReconciled: %q
    lastReconciledDuration: 2s
    lastReconciledStatus: %s
    totalReconciliations: 1
    metadata: {revision: %q}`, digest, at(first), at(last), status, revision)
}

func kustomization(uid, attempted, readyStatus, readyReason string, readySince time.Duration, history ...string) string {
	return fmt.Sprintf(`
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: app, namespace: team-a, uid: %s}
spec: {sourceRef: {kind: GitRepository, name: app}}
status:
  lastAttemptedRevision: %q
  conditions:
  - {type: Ready, status: %q, reason: %s, lastTransitionTime: %q}
  history:%s
`, uid, attempted, readyStatus, readyReason, at(readySince), strings.Join(history, ""))
}

const (
	revA = "main@sha1:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	revB = "main@sha1:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	revC = "main@sha1:cccccccccccccccccccccccccccccccccccccccc"
)

// TestDeliveryKustomization drives one Kustomization through a new
// artifact, a successful apply, a failing change and a recovery, and checks
// every family after each step; then a fresh tracker (a restarted
// exporter) must agree on what status.history still records.
func TestDeliveryKustomization(t *testing.T) {
	tr := NewDecoder(everyFamily())
	decodeInto(t, tr, gitRepo(revA, 0))
	// Applied 90s after the artifact.
	step1 := kustomization("k1", revA, "True", "ReconciliationSucceeded", 90*time.Second,
		ksEntry("sha256:d1", "ReconciliationSucceeded", revA, 90*time.Second, 90*time.Second))
	rec := decodeInto(t, tr, step1)
	expectSamples(t, "applied", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`:  1,
		`flux_resource_delivery_changes_total{result="failed"}`:     0,
		`flux_resource_delivery_failed_changes_total`:               0,
		`flux_resource_delivery_lead_time_seconds_bucket{le="300"}`: 1,
		`flux_resource_delivery_lead_time_seconds_sum`:              90,
		`flux_resource_delivery_lead_time_seconds_count`:            1,
		`flux_resource_delivery_time_to_restore_seconds_count`:      0,
	})
	// The same object again (a relist) changes nothing.
	rec = decodeInto(t, tr, step1)
	expectSamples(t, "relisted", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 1,
		`flux_resource_delivery_lead_time_seconds_count`:           1,
	})

	// A new commit whose health check fails: Flux records the digest with
	// HealthCheckFailed and Ready goes False.
	decodeInto(t, tr, gitRepo(revB, time.Hour))
	failing := kustomization("k1", revB, "False", "HealthCheckFailed", time.Hour+6*time.Minute,
		ksEntry("sha256:d2", "HealthCheckFailed", revB, time.Hour+time.Minute, time.Hour+6*time.Minute),
		ksEntry("sha256:d1", "ReconciliationSucceeded", revA, 90*time.Second, 50*time.Minute))
	rec = decodeInto(t, tr, failing)
	expectSamples(t, "failing change", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 1,
		`flux_resource_delivery_changes_total{result="failed"}`:    1,
		`flux_resource_delivery_failed_changes_total`:              1,
		`flux_resource_delivery_lead_time_seconds_count`:           1,
		`flux_resource_delivery_time_to_restore_seconds_count`:     0,
	})

	// Recovery: the same manifests pass their health check on a later
	// attempt. Same digest, so no new change; its lead time is to this
	// first success, and the outage lasted from 1h6m to 1h20m.
	recovered := kustomization("k1", revB, "True", "ReconciliationSucceeded", time.Hour+20*time.Minute,
		ksEntry("sha256:d2", "ReconciliationSucceeded", revB, time.Hour+20*time.Minute, time.Hour+20*time.Minute),
		ksEntry("sha256:d2", "HealthCheckFailed", revB, time.Hour+time.Minute, time.Hour+6*time.Minute),
		ksEntry("sha256:d1", "ReconciliationSucceeded", revA, 90*time.Second, 50*time.Minute))
	rec = decodeInto(t, tr, recovered)
	want := map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`:        1,
		`flux_resource_delivery_changes_total{result="failed"}`:           1,
		`flux_resource_delivery_failed_changes_total`:                     1,
		`flux_resource_delivery_lead_time_seconds_bucket{le="900"}`:       1,
		`flux_resource_delivery_lead_time_seconds_bucket{le="3600"}`:      2,
		`flux_resource_delivery_lead_time_seconds_sum`:                    90 + 20*60,
		`flux_resource_delivery_lead_time_seconds_count`:                  2,
		`flux_resource_delivery_time_to_restore_seconds_bucket{le="300"}`: 0,
		`flux_resource_delivery_time_to_restore_seconds_bucket{le="900"}`: 1,
		`flux_resource_delivery_time_to_restore_seconds_sum`:              14 * 60,
		`flux_resource_delivery_time_to_restore_seconds_count`:            1,
	}
	expectSamples(t, "recovered", deliverySamples(t, rec), want)

	// A restarted exporter counts nothing status.history held when it
	// started: Prometheus would add it again on top of what the exporter
	// before it counted. Only a change recorded after its start counts,
	// with its lead time.
	restarted := NewDecoder(countingSince(2 * time.Hour))
	decodeInto(t, restarted, gitRepo(revB, time.Hour))
	rec = decodeInto(t, restarted, recovered)
	expectSamples(t, "restarted", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 0,
		`flux_resource_delivery_changes_total{result="failed"}`:    0,
		`flux_resource_delivery_failed_changes_total`:              0,
		`flux_resource_delivery_lead_time_seconds_count`:           0,
		`flux_resource_delivery_time_to_restore_seconds_count`:     0,
	})
	decodeInto(t, restarted, gitRepo(revC, 3*time.Hour))
	rec = decodeInto(t, restarted, kustomization("k1", revC, "True", "ReconciliationSucceeded", time.Hour+20*time.Minute,
		ksEntry("sha256:d3", "ReconciliationSucceeded", revC, 3*time.Hour+time.Minute, 3*time.Hour+time.Minute),
		ksEntry("sha256:d2", "ReconciliationSucceeded", revB, time.Hour+20*time.Minute, time.Hour+20*time.Minute),
		ksEntry("sha256:d2", "HealthCheckFailed", revB, time.Hour+time.Minute, time.Hour+6*time.Minute)))
	expectSamples(t, "restarted, a new change", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 1,
		`flux_resource_delivery_lead_time_seconds_count`:           1,
		`flux_resource_delivery_lead_time_seconds_sum`:             60,
	})
}

// countingSince is every family, counting the changes Flux recorded
// after t0+d.
func countingSince(d time.Duration) DecoderOptions {
	o := everyFamily()
	o.CountSince = t0.Add(d)
	return o
}

// TestDeliveryKustomizationBuildFailure: a revision that does not build
// leaves no history entry (kustomize-controller writes one only after a
// build), so Ready=False is about the attempted revision and does not fail
// the applied change; but it is an outage.
func TestDeliveryKustomizationBuildFailure(t *testing.T) {
	tr := NewDecoder(everyFamily())
	entry := ksEntry("sha256:d1", "ReconciliationSucceeded", revA, time.Minute, time.Minute)
	decodeInto(t, tr, kustomization("k1", revA, "True", "ReconciliationSucceeded", time.Minute, entry))
	rec := decodeInto(t, tr, kustomization("k1", revB, "False", "BuildFailed", time.Hour, entry))
	expectSamples(t, "build failed", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 1,
		`flux_resource_delivery_failed_changes_total`:              0,
	})
	// Ready=False because of the applied revision itself fails it.
	rec = decodeInto(t, tr, kustomization("k1", revA, "False", "ReconciliationFailed", time.Hour, entry))
	expectSamples(t, "applied revision fails", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_failed_changes_total`: 1,
	})
	rec = decodeInto(t, tr, kustomization("k1", revA, "True", "ReconciliationSucceeded", 2*time.Hour, entry))
	expectSamples(t, "restored", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_failed_changes_total`:          1,
		`flux_resource_delivery_time_to_restore_seconds_sum`:   3600,
		`flux_resource_delivery_time_to_restore_seconds_count`: 1,
	})
	// The object deleted and made again under the same name (a new UID)
	// starts over.
	rec = decodeInto(t, tr, kustomization("k2", revA, "True", "ReconciliationSucceeded", 2*time.Hour, entry))
	expectSamples(t, "recreated", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_failed_changes_total`:          0,
		`flux_resource_delivery_time_to_restore_seconds_count`: 0,
	})
}

func helmChart(version string, updated time.Duration) string {
	return fmt.Sprintf(`
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmChart
metadata: {name: team-a-web, namespace: team-a, uid: c1}
status:
  artifact: {revision: %q, lastUpdateTime: %q}
`, version, at(updated))
}

// hrSnap is a status.history snapshot as helm-controller writes it:
// every version has the first install's firstDeployed (2 minutes in, as
// Helm copies it), and lastDeployed when it was deployed.
func hrSnap(version int, status, action, chart string, deployed time.Duration) string {
	return fmt.Sprintf(`
  - {name: web, namespace: team-a, version: %d, status: %s, action: %s, chartName: web, chartVersion: %q, firstDeployed: %q, lastDeployed: %q}`,
		version, status, action, chart, at(2*time.Minute), at(deployed))
}

func helmRelease(attempted string, conds string, history ...string) string {
	return fmt.Sprintf(`
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web, namespace: team-a, uid: h1}
spec: {chart: {spec: {chart: web, sourceRef: {kind: HelmRepository, name: charts}}}}
status:
  helmChart: team-a/team-a-web
  lastAttemptedRevision: %q
  conditions:%s
  history:%s
`, attempted, conds, strings.Join(history, ""))
}

func conds(cs ...[4]string) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "\n  - {type: %s, status: %q, reason: %s, lastTransitionTime: %q}", c[0], c[1], c[2], c[3])
	}
	return b.String()
}

// TestDeliveryHelmReleaseRollback: an upgrade that fails and is rolled
// back, as helm-controller v1.6 and Helm v4 record it: the failed release
// stays failed, the rollback is a new deployed release with action
// rollback, and the release it restored is marked with action rollback too.
func TestDeliveryHelmReleaseRollback(t *testing.T) {
	tr := NewDecoder(everyFamily())
	decodeInto(t, tr, helmChart("1.0.0", 0))
	rec := decodeInto(t, tr, helmRelease("1.0.0",
		conds([4]string{"Ready", "True", "InstallSucceeded", at(2 * time.Minute)}),
		hrSnap(1, "deployed", "install", "1.0.0", 2*time.Minute)))
	expectSamples(t, "installed", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 1,
		`flux_resource_delivery_lead_time_seconds_sum`:             120,
		`flux_resource_delivery_lead_time_seconds_count`:           1,
		`flux_resource_delivery_rollbacks_total`:                   0,
	})

	decodeInto(t, tr, helmChart("2.0.0", time.Hour))
	failed := helmRelease("2.0.0",
		conds([4]string{"Ready", "False", "UpgradeFailed", at(time.Hour + 5*time.Minute)}, [4]string{"Released", "False", "UpgradeFailed", at(time.Hour + 5*time.Minute)}),
		hrSnap(2, "failed", "upgrade", "2.0.0", time.Hour+5*time.Minute),
		hrSnap(1, "deployed", "install", "1.0.0", 2*time.Minute))
	rec = decodeInto(t, tr, failed)
	expectSamples(t, "upgrade failed", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 1,
		`flux_resource_delivery_changes_total{result="failed"}`:    1,
		`flux_resource_delivery_failed_changes_total`:              1,
		`flux_resource_delivery_lead_time_seconds_count`:           1,
	})

	rolledBack := helmRelease("2.0.0",
		conds([4]string{"Ready", "False", "RollbackSucceeded", at(time.Hour + 5*time.Minute)},
			[4]string{"Released", "False", "UpgradeFailed", at(time.Hour + 5*time.Minute)},
			[4]string{"Remediated", "True", "RollbackSucceeded", at(time.Hour + 8*time.Minute)}),
		hrSnap(3, "deployed", "rollback", "1.0.0", time.Hour+8*time.Minute),
		hrSnap(2, "failed", "upgrade", "2.0.0", time.Hour+5*time.Minute),
		hrSnap(1, "superseded", "rollback", "1.0.0", 2*time.Minute))
	rec = decodeInto(t, tr, rolledBack)
	s := deliverySamples(t, rec)
	expectSamples(t, "rolled back", s, map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 2,
		`flux_resource_delivery_changes_total{result="failed"}`:    1,
		`flux_resource_delivery_failed_changes_total`:              1,
		`flux_resource_delivery_rollbacks_total`:                   1,
		`flux_delivery_last_rollback_info{failed_chart_version="2.0.0",failed_version="2",restored_chart_version="1.0.0",rollback_version="3"}`: 1,
		`flux_resource_delivery_time_to_restore_seconds_sum`:   3 * 60,
		`flux_resource_delivery_time_to_restore_seconds_count`: 1,
		`flux_resource_delivery_lead_time_seconds_count`:       1,
	})

	// An exporter restarted after the rollback counts none of it, but
	// names the newest rollback; one restarted before the failed upgrade
	// counts what came after its start: the failure, the rollback and the
	// restore.
	for _, c := range []struct {
		since time.Duration
		want  map[string]float64
	}{
		{time.Hour + 10*time.Minute, map[string]float64{
			`flux_resource_delivery_changes_total{result="succeeded"}`: 0, `flux_resource_delivery_changes_total{result="failed"}`: 0,
			`flux_resource_delivery_failed_changes_total`: 0, `flux_resource_delivery_rollbacks_total`: 0,
			`flux_resource_delivery_time_to_restore_seconds_count`: 0,
		}},
		{time.Hour, map[string]float64{
			`flux_resource_delivery_changes_total{result="succeeded"}`: 1, `flux_resource_delivery_changes_total{result="failed"}`: 1,
			`flux_resource_delivery_failed_changes_total`: 1, `flux_resource_delivery_rollbacks_total`: 1,
			`flux_resource_delivery_time_to_restore_seconds_count`: 1, `flux_resource_delivery_time_to_restore_seconds_sum`: 3 * 60,
		}},
	} {
		restarted := NewDecoder(countingSince(c.since))
		decodeInto(t, restarted, helmChart("2.0.0", time.Hour))
		rec := decodeInto(t, restarted, rolledBack)
		c.want[`flux_delivery_last_rollback_info{failed_chart_version="2.0.0",failed_version="2",restored_chart_version="1.0.0",rollback_version="3"}`] = 1
		expectSamples(t, fmt.Sprintf("restarted at %v", c.since), deliverySamples(t, rec), c.want)
	}

	// The next upgrade succeeds: a new change with its lead time, and Ready
	// True does not end an outage twice.
	decodeInto(t, tr, helmChart("2.0.1", 2*time.Hour))
	rec = decodeInto(t, tr, helmRelease("2.0.1",
		conds([4]string{"Ready", "True", "UpgradeSucceeded", at(2*time.Hour + 4*time.Minute)}),
		hrSnap(4, "deployed", "upgrade", "2.0.1", 2*time.Hour+4*time.Minute),
		hrSnap(3, "superseded", "", "1.0.0", time.Hour+8*time.Minute)))
	expectSamples(t, "upgraded", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 3,
		`flux_resource_delivery_failed_changes_total`:              1,
		`flux_resource_delivery_rollbacks_total`:                   1,
		`flux_resource_delivery_lead_time_seconds_count`:           2,
		`flux_resource_delivery_lead_time_seconds_sum`:             120 + 240,
		`flux_resource_delivery_time_to_restore_seconds_count`:     1,
	})
}

// TestDeliveryPendingRelease: a release Helm has not finished is not a
// change yet.
func TestDeliveryPendingRelease(t *testing.T) {
	tr := NewDecoder(everyFamily())
	rec := decodeInto(t, tr, helmRelease("1.0.0",
		conds([4]string{"Ready", "Unknown", "Progressing", at(0)}),
		hrSnap(1, "pending-install", "install", "1.0.0", 0)))
	expectSamples(t, "pending", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 0,
		`flux_resource_delivery_changes_total{result="failed"}`:    0,
	})
	rec = decodeInto(t, tr, helmRelease("1.0.0",
		conds([4]string{"Ready", "True", "InstallSucceeded", at(time.Minute)}),
		hrSnap(1, "deployed", "install", "1.0.0", 0)))
	expectSamples(t, "deployed", deliverySamples(t, rec), map[string]float64{
		`flux_resource_delivery_changes_total{result="succeeded"}`: 1,
	})
}

// TestDeliveryFastPathMatchesClientGolang holds the counter and histogram
// rendering to client_golang's encoders, in both formats: OpenMetrics
// names counter families without _total and spells bounds as floats.
func TestDeliveryFastPathMatchesClientGolang(t *testing.T) {
	tr := NewDecoder(everyFamily())
	decodeInto(t, tr, gitRepo(revA, 0))
	rec := decodeInto(t, tr, kustomization("k1", revA, "True", "ReconciliationSucceeded", 90*time.Second,
		ksEntry("sha256:d1", "ReconciliationSucceeded", revA, 90*time.Second, 90*time.Second)))
	hr := decodeInto(t, tr, helmRelease("2.0.0",
		conds([4]string{"Ready", "False", "RollbackSucceeded", at(time.Hour)}, [4]string{"Remediated", "True", "RollbackSucceeded", at(2 * time.Hour)}),
		hrSnap(3, "deployed", "rollback", "1.0.0", 2*time.Hour),
		hrSnap(2, "failed", "upgrade", "2.0.0", time.Hour)))
	records := []*Record{rec.delivery.record(), hr.delivery.record()}
	for _, f := range []expfmt.Format{expfmt.NewFormat(expfmt.TypeTextPlain), expfmt.NewFormat(expfmt.TypeOpenMetrics)} {
		if err := sameAsClientGolang(records, f); err != nil {
			t.Error(err)
		}
	}
}

// TestDeliverySweep: the tracker forgets an object the caches no longer
// hold, once it has not been decoded for a sweep period.
func TestDeliverySweep(t *testing.T) {
	tr := NewDecoder(everyFamily())
	rec := decodeInto(t, tr, kustomization("k1", revA, "True", "ReconciliationSucceeded", time.Minute,
		ksEntry("sha256:d1", "ReconciliationSucceeded", revA, time.Minute, time.Minute)))
	states := []kube.KindState[*Record]{{Kind: kube.Kind{Kind: "Kustomization"}, Records: []*Record{rec}}}
	tr.delivery.sweep(states)
	if len(tr.delivery.objects) != 1 {
		t.Fatalf("a live object was forgotten")
	}
	tr.delivery.mu.Lock()
	tr.delivery.objects[objectKey{"Kustomization", "team-a", "app"}].lastDecoded = time.Now().Add(-2 * sweepEvery)
	tr.delivery.swept = time.Time{}
	tr.delivery.mu.Unlock()
	tr.delivery.sweep(states)
	if len(tr.delivery.objects) != 1 {
		t.Fatalf("a live object was forgotten")
	}
	tr.delivery.swept = time.Time{}
	tr.delivery.sweep(nil)
	if len(tr.delivery.objects) != 0 {
		t.Fatalf("a deleted object is still tracked")
	}
}

// TestDeliveryUninstallRemediation: helm-controller remediates a failed
// install by uninstalling it and updates the release to uninstalled; a
// restarted exporter that reads only that must still count a failed change.
func TestDeliveryUninstallRemediation(t *testing.T) {
	for name, snap := range map[string]string{
		"seen failing":          hrSnap(1, "failed", "install", "1.0.0", time.Minute),
		"seen after the remedy": hrSnap(1, "uninstalled", "uninstall-remediation", "1.0.0", time.Minute),
	} {
		tr := NewDecoder(everyFamily())
		rec := decodeInto(t, tr, helmRelease("1.0.0", conds([4]string{"Ready", "False", "InstallFailed", at(time.Minute)}), snap))
		expectSamples(t, name, deliverySamples(t, rec), map[string]float64{
			`flux_resource_delivery_changes_total{result="failed"}`:    1,
			`flux_resource_delivery_changes_total{result="succeeded"}`: 0,
			`flux_resource_delivery_failed_changes_total`:              1,
		})
	}
}
