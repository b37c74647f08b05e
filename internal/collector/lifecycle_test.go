package collector

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// seriesValue is the value of the record's only series of family f, and
// whether it has one.
func seriesValue(t *testing.T, rec *Record, f *family) (float64, bool) {
	t.Helper()
	var vals []float64
	for _, s := range rec.series {
		if int(s.family) == f.id {
			vals = append(vals, s.value)
		}
	}
	if len(vals) > 1 {
		t.Fatalf("%s: %d series, want at most one", f.name, len(vals))
	}
	if len(vals) == 0 {
		return 0, false
	}
	return vals[0], true
}

func unix(s string) float64 {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return float64(t.Unix())
}

// TestNotReadySince holds the start of a failure to what the controllers
// record: each case is a state a controller writes (lifecycle.go cites
// where), and want is when the failure began, or absent (-1).
func TestNotReadySince(t *testing.T) {
	cases := []struct {
		name, object string
		want         float64
	}{{
		name: "Ready is absent",
		object: `
kind: GitRepository
metadata: {name: a, namespace: apps, uid: u, creationTimestamp: "2026-01-01T00:00:00Z"}
status:
  conditions:
  - {type: Ready, status: "True", reason: Succeeded, lastTransitionTime: "2026-01-01T00:01:00Z"}`,
		want: -1,
	}, {
		name: "OCIRepository failing verification: SourceVerified keeps the first failure while every retry's building-artifact step moves Ready and Reconciling",
		object: `
kind: OCIRepository
metadata: {name: a, namespace: apps, uid: u, generation: 1, creationTimestamp: "2026-01-01T00:00:00Z"}
status:
  conditions:
  - {type: Reconciling, status: "True", reason: ProgressingWithRetry, lastTransitionTime: "2026-01-01T02:40:00Z"}
  - {type: Ready, status: "False", reason: VerificationError, lastTransitionTime: "2026-01-01T02:40:05Z"}
  - {type: SourceVerified, status: "False", reason: VerificationError, lastTransitionTime: "2026-01-01T00:00:10Z"}`,
		want: unix("2026-01-01T00:00:10Z"),
	}, {
		name: "Kustomization retrying a failed health check: the history entry's firstReconciled dates it",
		object: `
kind: Kustomization
metadata: {name: a, namespace: apps, uid: u, creationTimestamp: "2026-01-01T00:00:00Z"}
status:
  conditions:
  - {type: Ready, status: "Unknown", reason: Progressing, lastTransitionTime: "2026-01-01T05:00:00Z"}
  - {type: Reconciling, status: "True", reason: Progressing, lastTransitionTime: "2026-01-01T05:00:00Z"}
  history:
  - {digest: "sha256:b", firstReconciled: "2026-01-01T01:00:00Z", lastReconciled: "2026-01-01T04:00:00Z", lastReconciledDuration: 1m, lastReconciledStatus: HealthCheckFailed, totalReconciliations: 4}
  - {digest: "sha256:a", firstReconciled: "2025-12-01T00:00:00Z", lastReconciled: "2025-12-31T00:00:00Z", lastReconciledDuration: 1s, lastReconciledStatus: ReconciliationSucceeded, totalReconciliations: 40}`,
		want: unix("2026-01-01T01:00:00Z"),
	}, {
		name: "Kustomization progressing after a success: a succeeded history entry dates nothing",
		object: `
kind: Kustomization
metadata: {name: a, namespace: apps, uid: u, creationTimestamp: "2026-01-01T00:00:00Z"}
status:
  conditions:
  - {type: Ready, status: "Unknown", reason: Progressing, lastTransitionTime: "2026-01-01T05:00:00Z"}
  - {type: Reconciling, status: "True", reason: Progressing, lastTransitionTime: "2026-01-01T05:00:01Z"}
  history:
  - {digest: "sha256:a", firstReconciled: "2025-12-01T00:00:00Z", lastReconciled: "2026-01-01T04:00:00Z", lastReconciledDuration: 1s, lastReconciledStatus: ReconciliationSucceeded, totalReconciliations: 40}`,
		want: unix("2026-01-01T05:00:00Z"),
	}, {
		name: "HelmRelease whose TestSuccess failed long ago under ignoreFailures does not date a new failure",
		object: `
kind: HelmRelease
metadata: {name: a, namespace: apps, uid: u, creationTimestamp: "2026-01-01T00:00:00Z"}
status:
  conditions:
  - {type: Ready, status: "False", reason: UpgradeFailed, lastTransitionTime: "2026-03-01T00:00:00Z"}
  - {type: Released, status: "False", reason: UpgradeFailed, lastTransitionTime: "2026-03-01T00:00:00Z"}
  - {type: TestSuccess, status: "False", reason: TestFailed, lastTransitionTime: "2026-01-02T00:00:00Z"}`,
		want: unix("2026-03-01T00:00:00Z"),
	}, {
		name: "never reconciled: nothing dates it (FluxGenerationNotObserved covers it)",
		object: `
kind: Kustomization
metadata: {name: a, namespace: apps, uid: u, creationTimestamp: "2026-01-01T00:00:00Z"}`,
		want: -1,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, rec := decodeYAML(t, c.object)
			got, ok := seriesValue(t, rec, notReadySinceFamily)
			if c.want < 0 {
				if ok {
					t.Fatalf("got %v, want no series", got)
				}
				return
			}
			if !ok || got != c.want {
				t.Fatalf("got %v (present %v), want %v", got, ok, c.want)
			}
		})
	}
}

// TestNotReadySinceCarriesOver follows one OCIRepository through retries
// whose every condition moves (a verification error whose message names a
// new digest each time): the record remembers the failure's start until
// the object is Ready, and only for the same object.
func TestNotReadySinceCarriesOver(t *testing.T) {
	step := func(uid, ready, at string) string {
		return `
kind: OCIRepository
metadata: {name: a, namespace: apps, uid: ` + uid + `, creationTimestamp: "2026-01-01T00:00:00Z"}
status:
  conditions:
  - {type: Ready, status: "` + ready + `", reason: R, lastTransitionTime: "` + at + `"}`
	}
	var prev *Record
	dec := NewDecoder(everyFamily())
	decode := func(doc string) *Record {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		acc, errs := dec.Decode(kube.Kind{Kind: "OCIRepository"}, &unstructured.Unstructured{Object: obj}, prev)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		prev = acc
		return prev
	}
	for i, s := range []struct {
		doc  string
		want float64
	}{
		{step("u1", "False", "2026-01-01T01:00:00Z"), unix("2026-01-01T01:00:00Z")},
		{step("u1", "Unknown", "2026-01-01T01:05:00Z"), unix("2026-01-01T01:00:00Z")},
		{step("u1", "False", "2026-01-01T01:06:00Z"), unix("2026-01-01T01:00:00Z")},
		{step("u1", "True", "2026-01-01T02:00:00Z"), -1},
		{step("u1", "False", "2026-01-01T03:00:00Z"), unix("2026-01-01T03:00:00Z")},
		// The Unix epoch is a time like any other, not "none".
		{step("u1", "False", "1970-01-01T00:00:00Z"), 0},
		{step("u1", "Unknown", "1970-01-01T00:05:00Z"), 0},
		// Deleted and created again under the same name: a new failure.
		{step("u2", "False", "2026-01-01T04:00:00Z"), unix("2026-01-01T04:00:00Z")},
	} {
		got, ok := seriesValue(t, decode(s.doc), notReadySinceFamily)
		if (s.want < 0) == ok || (ok && got != s.want) {
			t.Fatalf("step %d: got %v (present %v), want %v", i, got, ok, s.want)
		}
	}
}

// TestTimeoutAndDeletion reads deadlines as the controllers default them
// and deletion only while it is pending.
func TestTimeoutAndDeletion(t *testing.T) {
	cases := []struct {
		name, object      string
		timeout, deletion float64 // -1: no series
		finalizers        int
	}{
		{"Kustomization timeout defaults to its interval less 30s", `
kind: Kustomization
metadata: {name: a, namespace: apps, uid: u}
spec: {interval: 10m}`, 570, -1, 0},
		{"Kustomization spec.timeout", `
kind: Kustomization
metadata: {name: a, namespace: apps, uid: u, finalizers: [finalizers.fluxcd.io]}
spec: {interval: 10m, timeout: 1h}`, 3600, -1, 0},
		{"HelmRelease defaults to 5m; the largest action timeout wins", `
kind: HelmRelease
metadata: {name: a, namespace: apps, uid: u}
spec: {interval: 10m, install: {timeout: 20m}}`, 1200, -1, 0},
		{"HelmRelease without timeouts", `
kind: HelmRelease
metadata: {name: a, namespace: apps, uid: u}
spec: {interval: 10m}`, 300, -1, 0},
		{"GitRepository has no reconcile deadline series", `
kind: GitRepository
metadata: {name: a, namespace: apps, uid: u}
spec: {interval: 10m, timeout: 60s}`, -1, -1, 0},
		{"Kustomization stuck in deletion keeps its finalizer, listed once", `
kind: Kustomization
metadata: {name: a, namespace: apps, uid: u, deletionTimestamp: "2026-01-01T00:00:00Z", finalizers: [finalizers.fluxcd.io, finalizers.fluxcd.io, example.com/other]}
spec: {interval: 40s}`, 30, unix("2026-01-01T00:00:00Z"), 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, rec := decodeYAML(t, c.object)
			for _, f := range []struct {
				fam  *family
				want float64
			}{{timeoutFamily, c.timeout}, {deletionFamily, c.deletion}} {
				got, ok := seriesValue(t, rec, f.fam)
				if (f.want < 0) == ok || (ok && got != f.want) {
					t.Errorf("%s: got %v (present %v), want %v", f.fam.name, got, ok, f.want)
				}
			}
			n := 0
			for _, s := range rec.series {
				if int(s.family) == finalizerFamily.id {
					n++
				}
			}
			if n != c.finalizers {
				t.Errorf("%s: %d series, want %d", finalizerFamily.name, n, c.finalizers)
			}
		})
	}
}
