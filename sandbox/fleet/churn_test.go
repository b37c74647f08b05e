package fleet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestChurnChangesTheServer runs a few ticks of churn against a real API
// server and looks for each kind of change in what the server serves.
func TestChurnChangesTheServer(t *testing.T) {
	t.Parallel()
	s := apiserver.StartT(t, apiserver.Options{Mode: apiserver.ModeCRD})
	ctx := t.Context()
	f := mustGenerate(t, Options{Seed: 3, Objects: 150, Namespaces: 3, Now: time.Now()})
	if err := Apply(ctx, s.RESTConfig(), f); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	before := listFleet(t, ctx, s.RESTConfig())

	runCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	stats, err := Churn(runCtx, s.RESTConfig(), f, ChurnOptions{
		Interval: 20 * time.Millisecond, Seed: 11, ChangesPerTick: 3, Ticks: 24, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatalf("Churn: %v", err)
	}
	if stats.Ticks != 24 {
		t.Fatalf("churn ran %d ticks, want 24 (stats %+v)", stats.Ticks, stats)
	}
	if stats.Errors != 0 {
		t.Errorf("churn reported %d errors (stats %+v)", stats.Errors, stats)
	}
	for name, n := range map[string]int{
		"revision bumps": stats.RevisionBumps, "dependent updates": stats.DependentUpdates,
		"readiness flips": stats.ReadinessFlips, "generation bumps": stats.GenerationBumps,
		"catch-ups": stats.CatchUps, "suspends": stats.Suspends, "resumes": stats.Resumes,
		"deletes": stats.Deletes, "creates": stats.Creates,
		"failed changes": stats.FailedChanges, "recoveries": stats.Recoveries,
	} {
		if n == 0 {
			t.Errorf("churn made no %s (stats %+v)", name, stats)
		}
	}

	after := listFleet(t, ctx, s.RESTConfig())
	checkHistories(t, after)
	str := func(u *unstructured.Unstructured, path ...string) string {
		v, _, _ := unstructured.NestedString(u.Object, path...)
		return v
	}
	var revisions, applied, flipped, lagging, suspendChanged, deleted, created int
	for r, old := range before {
		cur := after[r]
		if cur == nil {
			deleted++
			continue
		}
		if str(old, "status", "artifact", "revision") != str(cur, "status", "artifact", "revision") {
			revisions++
		}
		if str(old, "status", "lastAttemptedRevision") != str(cur, "status", "lastAttemptedRevision") {
			applied++
		}
		if conditionStatus(old.Object, "Ready") != conditionStatus(cur.Object, "Ready") {
			flipped++
		}
		if cur.GetGeneration() > old.GetGeneration() {
			lagging++
		}
		a, _, _ := unstructured.NestedBool(old.Object, "spec", "suspend")
		b, _, _ := unstructured.NestedBool(cur.Object, "spec", "suspend")
		if a != b {
			suspendChanged++
		}
	}
	for r := range after {
		if before[r] == nil {
			created++
		}
	}
	t.Logf("stats %+v; on the server: %d revisions, %d consumers applied, %d readiness changes, %d generation bumps, %d suspend changes, %d deleted, %d created",
		stats, revisions, applied, flipped, lagging, suspendChanged, deleted, created)
	if revisions == 0 || applied == 0 || flipped == 0 || lagging == 0 || deleted == 0 || created == 0 {
		t.Error("some kind of change is not visible on the server")
	}
	// Some objects churn created it also deleted, so compare totals.
	if want := len(before) - stats.Deletes + stats.Creates; len(after) != want {
		t.Errorf("%d objects on the server, want %d - %d deleted + %d created = %d", len(after), len(before), stats.Deletes, stats.Creates, want)
	}
}

func TestChurnStopsOnCancel(t *testing.T) {
	t.Parallel()
	s := apiserver.StartT(t, apiserver.Options{Mode: apiserver.ModeCRD})
	f := mustGenerate(t, Options{Seed: 5, Objects: 40, Namespaces: 2})
	if err := Apply(t.Context(), s.RESTConfig(), f); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := Churn(ctx, s.RESTConfig(), f, ChurnOptions{Interval: 10 * time.Millisecond, Seed: 1, Logger: quietLogger()})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Churn after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Churn did not return within 30s of cancel")
	}
	if _, err := Churn(t.Context(), s.RESTConfig(), f, ChurnOptions{}); err == nil {
		t.Error("Churn without an interval succeeded")
	}
}

// checkHistories holds every history churn wrote to what the controllers
// write: a Kustomization's at most 5 entries, one per digest and status
// (fluxcd/pkg apis/meta History.Upsert); a HelmRelease's releases newest
// first, one deployed at most, none older than the previous deployed or
// superseded release (helm-controller api/v2 Snapshots.Truncate).
func checkHistories(t *testing.T, objs map[objRef]*unstructured.Unstructured) {
	t.Helper()
	for r, u := range objs {
		history, _, _ := unstructured.NestedSlice(u.Object, "status", "history")
		switch r.kind {
		case KindKustomization:
			if len(history) > 5 {
				t.Errorf("%s: %d history entries, Flux keeps 5", r, len(history))
			}
			seen := map[string]bool{}
			for _, h := range history {
				m := h.(map[string]any)
				key := fmt.Sprint(m["digest"], m["lastReconciledStatus"])
				if seen[key] {
					t.Errorf("%s: two history entries for %s", r, key)
				}
				seen[key] = true
			}
		case KindHelmRelease:
			deployed := 0
			last := int64(math.MaxInt64)
			for i, h := range history {
				m := h.(map[string]any)
				v, _ := m["version"].(int64)
				if v >= last {
					t.Errorf("%s: release %d after %d; the history is newest first", r, v, last)
				}
				last = v
				if m["status"] == "deployed" {
					deployed++
				}
				if i > 0 && i < len(history)-1 && (m["status"] == "deployed" || m["status"] == "superseded") {
					t.Errorf("%s: release %d (%s) is not the last kept, yet Truncate stops at it", r, v, m["status"])
				}
			}
			if deployed > 1 {
				t.Errorf("%s: %d deployed releases", r, deployed)
			}
		}
	}
}
