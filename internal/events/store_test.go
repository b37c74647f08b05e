package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// inventory stands in for the informer cache in unit tests only; the
// end-to-end TTL tests against the API server live with the exporter.
type inventory struct {
	mu        sync.Mutex
	missing   map[string]bool
	unwatched map[string]bool
}

func newInventory() *inventory {
	return &inventory{missing: map[string]bool{}, unwatched: map[string]bool{}}
}

// exists answers as kube.Watcher.Exists does. A kind still syncing answers
// like a present object, so it needs no state of its own here.
func (i *inventory) exists(kind, namespace, name string) (exists, watched bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	key := kind + "/" + namespace + "/" + name
	if i.unwatched[key] {
		return false, false
	}
	return !i.missing[key], true
}

func (i *inventory) setMissing(name string, missing bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.missing["Kustomization/apps/"+name] = missing
}

func (i *inventory) setUnwatched(name string, unwatched bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.unwatched["Kustomization/apps/"+name] = unwatched
}

// names returns the names of the objects the receiver holds state for.
func names(t *testing.T, r *Receiver) []string {
	t.Helper()
	var out []string
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.objects {
		out = append(out, k.name)
	}
	return out
}

// checkSeriesAccounting verifies the running series count against what
// Collect exports, so the cap is enforced on the real number.
func checkSeriesAccounting(t *testing.T, r *Receiver) {
	t.Helper()
	r.mu.Lock()
	held := r.series
	r.mu.Unlock()
	if got := eventSeries(t, r); got != held {
		t.Fatalf("series accounting: holds %d, exports %d", held, got)
	}
}

func TestSeriesTTL(t *testing.T) {
	const ttl = 10 * time.Minute
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := &fakeClock{now: t0}
	inv := newInventory()
	s := newTestServer(t, Config{AllowUnsigned: true, SeriesTTL: ttl, Exists: inv.exists}, func(r *Receiver) {
		r.now = clock.Now
	})
	for _, name := range []string{"deleted", "kept", "flappy"} {
		e := kustomizationEvent(name, "info", "ReconciliationSucceeded", t0,
			map[string]string{"kustomize.toolkit.fluxcd.io/revision": "main@sha1:" + name})
		if code := s.post(t, mustMarshal(t, e), fluxHeaders(e.ReportingController, "")); code != http.StatusAccepted {
			t.Fatalf("post %s: %d", name, code)
		}
	}
	if n := eventSeries(t, s.r); n != 9 {
		t.Fatalf("series before sweeps = %d, want 9", n)
	}

	steps := []struct {
		at      time.Duration
		missing map[string]bool
		want    string
	}{
		// The absence clock starts at the first sweep that sees it.
		{0, map[string]bool{"deleted": true}, "deleted flappy kept"},
		{ttl - time.Second, nil, "deleted flappy kept"},
		{ttl, map[string]bool{"flappy": true}, "flappy kept"},
		// Coming back resets the clock.
		{ttl + 5*time.Minute, map[string]bool{"flappy": false}, "flappy kept"},
		{ttl + 6*time.Minute, map[string]bool{"flappy": true}, "flappy kept"},
		{2*ttl + 5*time.Minute, nil, "flappy kept"},
		{2*ttl + 6*time.Minute, nil, "kept"},
	}
	for i, st := range steps {
		for name, missing := range st.missing {
			inv.setMissing(name, missing)
		}
		clock.Set(t0.Add(st.at))
		s.r.sweep()
		got := names(t, s.r)
		if strings.Join(sorted(got), " ") != st.want {
			t.Fatalf("step %d (t0+%v): objects %v, want %s", i, st.at, sorted(got), st.want)
		}
		checkSeriesAccounting(t, s.r)
	}

	want := `
# HELP flux_event_revision_info Newest source revision named in a Flux event for the object, with the origin revision the same event named (originRevision metadata: the Git commit an OCI artifact was built from), empty when it named none; the value is always 1.
# TYPE flux_event_revision_info gauge
flux_event_revision_info{exported_namespace="apps",kind="Kustomization",name="kept",origin_revision="",revision="main@sha1:kept"} 1
`
	if err := testutil.CollectAndCompare(s.r, strings.NewReader(want), "flux_event_revision_info"); err != nil {
		t.Fatal(err)
	}
}

func TestNoExistsNeverExpires(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	s := newTestServer(t, Config{AllowUnsigned: true, SeriesTTL: time.Second}, func(r *Receiver) { r.now = clock.Now })
	e := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", time.Now(), nil)
	if code := s.post(t, mustMarshal(t, e), fluxHeaders(e.ReportingController, "")); code != http.StatusAccepted {
		t.Fatalf("post: %d", code)
	}
	for i := range 3 {
		clock.Set(clock.Now().Add(time.Hour * time.Duration(i+1)))
		s.r.sweep()
	}
	if n := eventSeries(t, s.r); n != 2 {
		t.Fatalf("series = %d, want 2", n)
	}
}

// TestRunSweeps checks that Run drives the sweep on its own, with the real
// clock and a short TTL.
func TestRunSweeps(t *testing.T) {
	inv := newInventory()
	s := newTestServer(t, Config{AllowUnsigned: true, SeriesTTL: 200 * time.Millisecond, Exists: inv.exists}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	for _, name := range []string{"gone", "here", "unwatched"} {
		e := kustomizationEvent(name, "info", "ReconciliationSucceeded", time.Now(), nil)
		if code := s.post(t, mustMarshal(t, e), fluxHeaders(e.ReportingController, "")); code != http.StatusAccepted {
			t.Fatalf("post: %d", code)
		}
	}
	inv.setMissing("gone", true)
	inv.setUnwatched("unwatched", true)
	waitFor(t, "the series of the deleted and the unwatched object to expire", func() bool {
		return strings.Join(sorted(names(t, s.r)), " ") == "here"
	})
}

// TestUnwatchedSeriesTTL: for an object the cache cannot know (a namespace
// outside --namespaces, a kind without a CRD), the TTL runs from the last
// event received for it, by the receiver's clock, not from the event's own
// timestamp. Objects the cache does see are unaffected by receipt.
func TestUnwatchedSeriesTTL(t *testing.T) {
	const ttl = 10 * time.Minute
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := &fakeClock{now: t0}
	inv := newInventory()
	s := newTestServer(t, Config{AllowUnsigned: true, SeriesTTL: ttl, Exists: inv.exists}, func(r *Receiver) {
		r.now = clock.Now
	})
	post := func(name string, at time.Duration) {
		t.Helper()
		clock.Set(t0.Add(at))
		// A stamp a day old: only the receipt may count.
		e := kustomizationEvent(name, "info", "ReconciliationSucceeded", t0.Add(-24*time.Hour), nil)
		if code := s.post(t, mustMarshal(t, e), fluxHeaders(e.ReportingController, "")); code != http.StatusAccepted {
			t.Fatalf("post %s: %d", name, code)
		}
	}
	for _, name := range []string{"quiet", "chatty", "watched", "gone"} {
		post(name, 0)
	}
	inv.setUnwatched("quiet", true)
	inv.setUnwatched("chatty", true)
	inv.setMissing("gone", true)

	steps := []struct {
		at     time.Duration
		before func()
		want   string
	}{
		{0, nil, "chatty gone quiet watched"},
		// A new event for chatty restarts its clock; quiet got none.
		{5 * time.Minute, func() { post("chatty", 5*time.Minute) }, "chatty gone quiet watched"},
		{ttl - time.Second, nil, "chatty gone quiet watched"},
		// The deleted object's clock started at the first sweep, at t0.
		{ttl, nil, "chatty watched"},
		{ttl + 5*time.Minute - time.Second, nil, "chatty watched"},
		{ttl + 5*time.Minute, nil, "watched"},
		// A present object keeps its series however long it stays quiet.
		{10 * ttl, nil, "watched"},
	}
	for i, st := range steps {
		if st.before != nil {
			st.before()
		}
		clock.Set(t0.Add(st.at))
		s.r.sweep()
		if got := strings.Join(sorted(names(t, s.r)), " "); got != st.want {
			t.Fatalf("step %d (t0+%v): objects %s, want %s", i, st.at, got, st.want)
		}
		checkSeriesAccounting(t, s.r)
	}
}

// TestUnsyncedKeepsSeries: while the cache has not synced, Exists answers
// as for a present object, so neither clock runs: a later deletion expires
// the series a full TTL after the cache first reports it.
func TestUnsyncedKeepsSeries(t *testing.T) {
	const ttl = 10 * time.Minute
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := &fakeClock{now: t0}
	synced := false
	var mu sync.Mutex
	exists := func(kind, namespace, name string) (bool, bool) {
		mu.Lock()
		defer mu.Unlock()
		if !synced {
			return true, true
		}
		return false, true
	}
	s := newTestServer(t, Config{AllowUnsigned: true, SeriesTTL: ttl, Exists: exists}, func(r *Receiver) {
		r.now = clock.Now
	})
	e := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", t0, nil)
	if code := s.post(t, mustMarshal(t, e), fluxHeaders(e.ReportingController, "")); code != http.StatusAccepted {
		t.Fatalf("post: %d", code)
	}
	for _, at := range []time.Duration{0, ttl, 5 * ttl} {
		clock.Set(t0.Add(at))
		s.r.sweep()
		if got := names(t, s.r); len(got) != 1 {
			t.Fatalf("t0+%v, not synced: objects %v, want webapp kept", at, got)
		}
	}
	mu.Lock()
	synced = true
	mu.Unlock()
	for _, step := range []struct {
		at   time.Duration
		want int
	}{{5 * ttl, 1}, {6*ttl - time.Second, 1}, {6 * ttl, 0}} {
		clock.Set(t0.Add(step.at))
		s.r.sweep()
		if got := names(t, s.r); len(got) != step.want {
			t.Fatalf("t0+%v, synced and gone: objects %v, want %d", step.at, got, step.want)
		}
	}
}

func TestMaxSeriesFlood(t *testing.T) {
	const maxSeries, workers, perWorker = 50, 4, 100
	s := newTestServer(t, Config{AllowUnsigned: true, MaxSeries: maxSeries}, nil)

	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				e := kustomizationEvent(fmt.Sprintf("flood-%d-%d", w, i), "info", "ReconciliationSucceeded", time.Now(), nil)
				body, err := json.Marshal(e)
				if err != nil {
					errs <- err
					return
				}
				req, err := http.NewRequest(http.MethodPost, s.URL+Path, bytes.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := s.Client().Do(req)
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					errs <- fmt.Errorf("%s: status %d", e.InvolvedObject.Name, resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Every new object needs a counter and a timestamp series.
	const accepted = maxSeries / 2
	if n := eventSeries(t, s.r); n != maxSeries {
		t.Fatalf("series = %d, want the cap %d", n, maxSeries)
	}
	checkSeriesAccounting(t, s.r)
	if n := testutil.CollectAndCount(s.r, "flux_events_total"); n != accepted {
		t.Fatalf("flux_events_total series = %d, want %d", n, accepted)
	}

	// At the cap an event that fits into existing series still counts, one
	// that needs a new series does not.
	name := names(t, s.r)[0]
	repeat := kustomizationEvent(name, "info", "ReconciliationSucceeded", time.Now(), nil)
	newSeverity := kustomizationEvent(name, "error", "HealthCheckFailed", time.Now(), nil)
	for _, e := range []fluxEvent{repeat, newSeverity} {
		if code := s.post(t, mustMarshal(t, e), fluxHeaders(e.ReportingController, "")); code != http.StatusAccepted {
			t.Fatalf("post: %d", code)
		}
	}
	want := fmt.Sprintf(`
# HELP flux_events_dropped_total Total number of valid Flux events that were accepted but not recorded, by cause.
# TYPE flux_events_dropped_total counter
flux_events_dropped_total{cause="max_series"} %d
`, workers*perWorker-accepted+1)
	if err := testutil.CollectAndCompare(s.r, strings.NewReader(want), "flux_events_dropped_total"); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"kind": "Kustomization", "exported_namespace": "apps", "name": name,
		"severity": "info", "reason": "ReconciliationSucceeded", "controller": "kustomize-controller"}
	if v, ok := sampleValue(t, s.r, "flux_events_total", labels); !ok || v != 2 {
		t.Fatalf("flux_events_total of %s = %v (present %v), want 2", name, v, ok)
	}
	labels["severity"], labels["reason"] = "error", "HealthCheckFailed"
	if _, ok := sampleValue(t, s.r, "flux_events_total", labels); ok {
		t.Fatalf("an event past the cap created a series")
	}
	if n := eventSeries(t, s.r); n != maxSeries {
		t.Fatalf("series after cap = %d, want %d", n, maxSeries)
	}
}

func TestLint(t *testing.T) {
	s := newTestServer(t, Config{AllowUnsigned: true}, nil)
	e := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", time.Now(),
		map[string]string{"revision": "main@sha1:aaaa"})
	if code := s.post(t, mustMarshal(t, e), fluxHeaders(e.ReportingController, "")); code != http.StatusAccepted {
		t.Fatalf("post: %d", code)
	}
	problems, err := testutil.CollectAndLint(s.r)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
