package controllers

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// obj is one per-object source series on a page.
type obj struct {
	kind, name string
	count      uint64
	sum        float64
}

// pageOf builds a page as readDurations would from a controller whose
// process started at start (0: the page has no start time).
func pageOf(start float64, objs ...obj) durationPage {
	p := durationPage{start: start, hasStart: start != 0, series: map[string]objectDurations{}}
	for _, o := range objs {
		m := &dto.Metric{Label: []*dto.LabelPair{
			{Name: new("namespace"), Value: new("apps")},
			{Name: new("name"), Value: new(o.name)},
			{Name: new("kind"), Value: new(o.kind)},
		}}
		p.series[sourceKey(m)] = objectDurations{kind: o.kind, durationTotal: durationTotal{sum: o.sum, count: o.count}}
	}
	return p
}

type totals map[string]durationTotal

// TestDurationAccountFold feeds pages in and checks the per-kind totals
// that come out, step by step.
func TestDurationAccountFold(t *testing.T) {
	const start, restarted = 1.7e9, 1.7e9 + 3600
	gr, ks := "GitRepository", "Kustomization"
	type step struct {
		page durationPage
		want totals
		// reset marks the step where the totals may go down.
		reset bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"first page counts the live series", []step{
			{page: pageOf(start, obj{gr, "a", 3, 1.5}, obj{gr, "b", 2, 0.5}, obj{ks, "a", 1, 0.25}),
				want: totals{gr: {2, 5}, ks: {0.25, 1}}},
		}},
		{"an unchanged page exports the same", []step{
			{page: pageOf(start, obj{gr, "a", 3, 1.5}), want: totals{gr: {1.5, 3}}},
			{page: pageOf(start, obj{gr, "a", 3, 1.5}), want: totals{gr: {1.5, 3}}},
		}},
		{"a new object adds to its kind", []step{
			{page: pageOf(start, obj{gr, "a", 3, 1.5}), want: totals{gr: {1.5, 3}}},
			{page: pageOf(start, obj{gr, "a", 3, 1.5}, obj{gr, "c", 1, 0.125}), want: totals{gr: {1.625, 4}}},
		}},
		{"a deleted object keeps its last values", []step{
			{page: pageOf(start, obj{gr, "a", 3, 1.5}, obj{gr, "b", 2, 0.5}), want: totals{gr: {2, 5}}},
			{page: pageOf(start, obj{gr, "a", 4, 2}), want: totals{gr: {2.5, 6}}},
			// Retained totals stay put while the live ones move.
			{page: pageOf(start, obj{gr, "a", 5, 2.25}), want: totals{gr: {2.75, 7}}},
		}},
		{"a kind whose objects are all deleted stays", []step{
			{page: pageOf(start, obj{gr, "a", 3, 1.5}, obj{ks, "a", 1, 0.25}), want: totals{gr: {1.5, 3}, ks: {0.25, 1}}},
			{page: pageOf(start, obj{ks, "a", 2, 0.5}), want: totals{gr: {1.5, 3}, ks: {0.5, 2}}},
			{page: pageOf(start), want: totals{gr: {1.5, 3}, ks: {0.5, 2}}},
		}},
		{"kinds with objects of the same name stay apart", []step{
			{page: pageOf(start, obj{gr, "a", 3, 1.5}, obj{ks, "a", 1, 0.25}), want: totals{gr: {1.5, 3}, ks: {0.25, 1}}},
			{page: pageOf(start, obj{gr, "a", 3, 1.5}), want: totals{gr: {1.5, 3}, ks: {0.25, 1}}},
		}},
		{"an object re-created between scrapes counts both lives", []step{
			{page: pageOf(start, obj{gr, "a", 5, 2.5}, obj{gr, "b", 1, 0.5}), want: totals{gr: {3, 6}}},
			{page: pageOf(start, obj{gr, "a", 1, 0.25}, obj{gr, "b", 1, 0.5}), want: totals{gr: {3.25, 7}}},
			{page: pageOf(start, obj{gr, "a", 2, 0.5}, obj{gr, "b", 1, 0.5}), want: totals{gr: {3.5, 8}}},
		}},
		{"a re-created object whose count came back the same but not its sum", []step{
			{page: pageOf(start, obj{gr, "a", 1, 0.5}), want: totals{gr: {0.5, 1}}},
			{page: pageOf(start, obj{gr, "a", 1, 0.25}), want: totals{gr: {0.75, 2}}},
		}},
		{"a process restart starts the pod over", []step{
			{page: pageOf(start, obj{gr, "a", 3, 1.5}, obj{ks, "a", 1, 0.25}), want: totals{gr: {1.5, 3}, ks: {0.25, 1}}},
			{page: pageOf(start, obj{gr, "a", 4, 2}), want: totals{gr: {2, 4}, ks: {0.25, 1}}},
			// Counters of the new process began from zero; so do these,
			// and a kind it has not reconciled yet is gone.
			{page: pageOf(restarted, obj{gr, "a", 1, 0.125}), want: totals{gr: {0.125, 1}}, reset: true},
			{page: pageOf(restarted, obj{gr, "a", 2, 0.25}), want: totals{gr: {0.25, 2}}},
		}},
		{"a restart of a process that shows no start time keeps what was seen", []step{
			{page: pageOf(0, obj{gr, "a", 5, 2.5}, obj{gr, "b", 2, 0.5}), want: totals{gr: {3, 7}}},
			// Every series went back or is not reconciled yet: each is
			// taken for a new object, none of the old totals is lost.
			{page: pageOf(0, obj{gr, "a", 1, 0.25}), want: totals{gr: {3.25, 8}}},
		}},
		{"a start time that appears later is no restart", []step{
			{page: pageOf(0, obj{gr, "a", 3, 1.5}), want: totals{gr: {1.5, 3}}},
			{page: pageOf(start, obj{gr, "a", 4, 2}), want: totals{gr: {2, 4}}},
			{page: pageOf(0, obj{gr, "a", 5, 2.5}), want: totals{gr: {2.5, 5}}},
			{page: pageOf(start, obj{gr, "a", 6, 3}), want: totals{gr: {3, 6}}},
		}},
		{"adding in another order never lowers the sum", []step{
			// 0.831 + 0.429 + 0.356 is 1.616, but once c is retained the
			// sum is 0.356 + 0.831 + 0.429, which float64 makes one ulp less.
			{page: pageOf(start, obj{gr, "a", 1, 0.831}, obj{gr, "b", 1, 0.429}, obj{gr, "c", 1, 0.356}), want: totals{gr: {1.616, 3}}},
			{page: pageOf(start, obj{gr, "a", 1, 0.831}, obj{gr, "b", 1, 0.429}), want: totals{gr: {1.616, 3}}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a durationAccount
			var last totals
			for i, s := range tc.steps {
				got := totals{}
				for _, k := range a.fold(s.page) {
					got[k.kind] = k.durationTotal
				}
				if len(got) != len(s.want) {
					t.Fatalf("step %d: got %v, want %v", i, got, s.want)
				}
				for kind, w := range s.want {
					if got[kind] != w {
						t.Errorf("step %d: %s got %+v, want %+v", i, kind, got[kind], w)
					}
					if p, ok := last[kind]; ok && !s.reset && (w.count < p.count || w.sum < p.sum) {
						t.Errorf("step %d: %s went down from %+v to %+v", i, kind, p, w)
					}
				}
				last = got
			}
		})
	}
}

// TestDurationBookSync checks that accounts live exactly as long as the
// cache lists their pod, ready or not.
func TestDurationBookSync(t *testing.T) {
	pod := func(name string, ready bool) kube.Pod {
		return kube.Pod{Namespace: "flux-system", Name: name, Controller: "source-controller", Ready: ready}
	}
	var b durationBook
	first := b.sync([]kube.Pod{pod("a", true), pod("b", true)})
	first[podKey(pod("a", true))].fold(pageOf(1, obj{"GitRepository", "x", 1, 1}))

	again := b.sync([]kube.Pod{pod("a", false), pod("b", true)})
	if again[podKey(pod("a", true))] != first[podKey(pod("a", true))] {
		t.Error("an unready pod lost its account")
	}
	b.sync([]kube.Pod{pod("b", true)})
	if len(b.pods) != 1 {
		t.Errorf("%d accounts for 1 listed pod", len(b.pods))
	}
	back := b.sync([]kube.Pod{pod("a", true), pod("b", true), pod("c", true)})
	if a := back[podKey(pod("a", true))]; a == first[podKey(pod("a", true))] || a.live != nil {
		t.Error("a pod listed again after it was gone kept its old account")
	}
	if len(back) != 3 || len(b.pods) != 3 {
		t.Errorf("accounts: handed out %d, kept %d; want 3", len(back), len(b.pods))
	}
}

// fakeController serves a client_golang registry as a Flux controller's
// /metrics, with a gotk_reconcile_duration_seconds histogram whose series
// are deleted with their objects, as fluxcd/pkg runtime/metrics does.
type fakeController struct {
	mu        sync.Mutex
	reg       *prometheus.Registry
	durations *prometheus.HistogramVec
	start     float64
	fail      atomic.Bool
	addr      string
}

func newFakeController(t *testing.T) *fakeController {
	t.Helper()
	f := &fakeController{}
	f.restart(1.7e9)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		f.mu.Lock()
		h := promhttp.HandlerFor(f.reg, promhttp.HandlerOpts{})
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.addr = srv.Listener.Addr().String()
	return f
}

// restart replaces the process: new counters, new start time.
func (f *fakeController) restart(start float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reg = prometheus.NewRegistry()
	f.start = start
	f.durations = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: reconcileDurationSource, Help: "Reconcile durations.",
		Buckets: prometheus.ExponentialBucketsRange(10e-3, 1800, 10)}, []string{"kind", "name", "namespace"})
	f.reg.MustRegister(f.durations, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: processStartSource, Help: "Start time."},
		func() float64 { return start }))
}

func (f *fakeController) reconcile(kind, name string, seconds ...float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range seconds {
		f.durations.WithLabelValues(kind, name, "apps").Observe(s)
	}
}

func (f *fakeController) delete(kind, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.durations.DeleteLabelValues(kind, name, "apps")
}

func (f *fakeController) pod(t *testing.T, name string) kube.Pod {
	t.Helper()
	host, port, err := net.SplitHostPort(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return kube.Pod{Namespace: "flux-system", Name: name, Controller: "source-controller", IP: host, Port: int32(n),
		Phase: corev1.PodRunning, Ready: true}
}

type podList struct {
	mu   sync.Mutex
	pods []kube.Pod
}

func (l *podList) Deployments() []kube.Deployment { return nil }

func (l *podList) Pods() []kube.Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]kube.Pod(nil), l.pods...)
}

func (l *podList) set(pods ...kube.Pod) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pods = pods
}

// durationsOf runs one scrape and returns the reconcile duration totals
// by pod and kind, and each pod's scrape_success.
func durationsOf(t *testing.T, c *Controllers) (map[[2]string]durationTotal, map[string]float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ch := make(chan prometheus.Metric, 64)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Update(ctx, ch)
		close(ch)
	}()
	got := map[[2]string]durationTotal{}
	success := map[string]float64{}
	for m := range ch {
		var out dto.Metric
		if err := m.Write(&out); err != nil {
			t.Errorf("invalid metric: %v", err)
			continue
		}
		l := map[string]string{}
		for _, lp := range out.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		switch m.Desc() {
		case reconcileDurationDesc:
			if len(out.GetSummary().GetQuantile()) != 0 {
				t.Errorf("quantiles exported: %v", out.GetSummary())
			}
			got[[2]string{l["pod"], l["kind"]}] = durationTotal{sum: out.GetSummary().GetSampleSum(), count: out.GetSummary().GetSampleCount()}
		case podScrapeSuccessDesc:
			success[l["pod"]] = out.GetGauge().GetValue()
		}
	}
	// Errorf, not Fatalf: parallel scrapes call this off the test's
	// goroutine.
	if err := <-errc; err != nil {
		t.Errorf("Update: %v", err)
	}
	return got, success
}

func newTestControllers(pods *podList) *Controllers {
	return &Controllers{state: pods, timeout: 5 * time.Second, log: slog.New(slog.DiscardHandler), client: newPodClient()}
}

// TestControllersReconcileDuration scrapes a client_golang registry that
// deletes per-object series as Flux does, through Update: deletions, a
// failed scrape, a restart, a replaced pod, a pod that goes and comes back.
func TestControllersReconcileDuration(t *testing.T) {
	f := newFakeController(t)
	pods := &podList{}
	pod0 := f.pod(t, "source-controller-0")
	pods.set(pod0)
	c := newTestControllers(pods)
	gr := "GitRepository"
	key := func(pod string) [2]string { return [2]string{pod, gr} }
	expect := func(step string, want map[[2]string]durationTotal) {
		t.Helper()
		got, success := durationsOf(t, c)
		if len(got) != len(want) {
			t.Fatalf("%s: got %v, want %v", step, got, want)
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s: %v got %+v, want %+v", step, k, got[k], w)
			}
		}
		for _, p := range pods.Pods() {
			if success[p.Name] != 1 && !f.fail.Load() {
				t.Errorf("%s: scrape_success of %s %v", step, p.Name, success[p.Name])
			}
		}
	}

	f.reconcile(gr, "a", 0.5, 0.25)
	f.reconcile(gr, "b", 1)
	expect("first scrape", map[[2]string]durationTotal{key("source-controller-0"): {1.75, 3}})

	f.delete(gr, "b")
	f.reconcile(gr, "a", 0.125)
	expect("object deleted", map[[2]string]durationTotal{key("source-controller-0"): {1.875, 4}})

	// A failed scrape emits nothing and leaves the account alone: what was
	// deleted meanwhile is still counted once the pod answers again.
	f.fail.Store(true)
	f.reconcile(gr, "c", 2)
	got, success := durationsOf(t, c)
	if len(got) != 0 || success["source-controller-0"] != 0 {
		t.Fatalf("failed scrape: durations %v, success %v", got, success)
	}
	f.fail.Store(false)
	expect("after a failed scrape", map[[2]string]durationTotal{key("source-controller-0"): {3.875, 5}})
	f.delete(gr, "c")
	f.fail.Store(true)
	durationsOf(t, c)
	f.fail.Store(false)
	expect("deleted while failing", map[[2]string]durationTotal{key("source-controller-0"): {3.875, 5}})

	// The controller process restarts under the same pod name.
	f.restart(1.7e9 + 600)
	f.reconcile(gr, "a", 0.25)
	expect("process restarted", map[[2]string]durationTotal{key("source-controller-0"): {0.25, 1}})
	f.reconcile(gr, "d", 0.5)
	expect("after the restart", map[[2]string]durationTotal{key("source-controller-0"): {0.75, 2}})
	f.delete(gr, "d")
	expect("deleted after the restart", map[[2]string]durationTotal{key("source-controller-0"): {0.75, 2}})

	// A new pod is a new series: it starts from its own page, and the old
	// one's account goes with it.
	pod1 := f.pod(t, "source-controller-1")
	pods.set(pod1)
	expect("pod replaced", map[[2]string]durationTotal{key("source-controller-1"): {0.25, 1}})
	if _, ok := c.durations.pods[podKey(pod0)]; ok || len(c.durations.pods) != 1 {
		t.Errorf("accounts after the pod went: %v", c.durations.pods)
	}
	pods.set(pod0, pod1)
	expect("pod name listed again", map[[2]string]durationTotal{key("source-controller-0"): {0.25, 1}, key("source-controller-1"): {0.25, 1}})
}

// TestControllersReconcileDurationParallel runs scrapes at once, as two
// Prometheus servers do, while objects come and go between rounds: every
// scrape of a round must report the same totals, and the race detector
// watches the accounts.
func TestControllersReconcileDurationParallel(t *testing.T) {
	f := newFakeController(t)
	pods := &podList{}
	pods.set(f.pod(t, "source-controller-0"))
	c := newTestControllers(pods)
	gr := "GitRepository"
	var want durationTotal
	for round := range 6 {
		name := "obj-" + strconv.Itoa(round)
		f.reconcile(gr, name, 0.5, 0.25)
		want = want.add(durationTotal{0.75, 2})
		if round%2 == 1 {
			// The previous object goes; its values stay counted.
			f.delete(gr, "obj-"+strconv.Itoa(round-1))
		}
		const parallel = 6
		results := make([]map[[2]string]durationTotal, parallel)
		var wg sync.WaitGroup
		for i := range parallel {
			wg.Go(func() { results[i], _ = durationsOf(t, c) })
		}
		wg.Wait()
		for i, r := range results {
			if got := r[[2]string{"source-controller-0", gr}]; got != want {
				t.Errorf("round %d scrape %d: got %+v, want %+v", round, i, got, want)
			}
		}
	}
}

// TestControllersReconcileDurationSummary accepts a summary as the source,
// and fails the pod for a family of another type.
func TestControllersReconcileDurationSummary(t *testing.T) {
	reg := prometheus.NewRegistry()
	summary := prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: reconcileDurationSource, Help: "Reconcile durations."},
		[]string{"kind", "name", "namespace"})
	reg.MustRegister(summary)
	summary.WithLabelValues("Kustomization", "a", "apps").Observe(0.5)
	summary.WithLabelValues("Kustomization", "b", "apps").Observe(0.25)
	gauges := prometheus.NewRegistry()
	gauges.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: reconcileDurationSource, Help: "Not a histogram."}))

	for _, tc := range []struct {
		name string
		reg  *prometheus.Registry
		want map[[2]string]durationTotal
	}{
		{"summary", reg, map[[2]string]durationTotal{{"kustomize-controller-0", "Kustomization"}: {0.75, 2}}},
		{"gauge", gauges, map[[2]string]durationTotal{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(promhttp.HandlerFor(tc.reg, promhttp.HandlerOpts{}))
			t.Cleanup(srv.Close)
			host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
			n, _ := strconv.Atoi(port)
			pods := &podList{}
			pods.set(kube.Pod{Namespace: "flux-system", Name: "kustomize-controller-0", Controller: "kustomize-controller",
				IP: host, Port: int32(n), Phase: corev1.PodRunning, Ready: true})
			got, success := durationsOf(t, newTestControllers(pods))
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, w := range tc.want {
				if got[k] != w {
					t.Errorf("%v got %+v, want %+v", k, got[k], w)
				}
			}
			if wantSuccess := map[bool]float64{true: 1, false: 0}[len(tc.want) > 0]; success["kustomize-controller-0"] != wantSuccess {
				t.Errorf("scrape_success %v, want %v", success["kustomize-controller-0"], wantSuccess)
			}
		})
	}
}
