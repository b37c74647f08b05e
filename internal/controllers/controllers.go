// Package controllers reports the Flux controllers: their Deployments from
// the cache, and a curated, re-labelled set of each ready pod's own
// metrics, fetched from the pod on every scrape.
package controllers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/version"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// ControllerState is the read side of the Flux controllers' caches.
type ControllerState interface {
	Deployments() []kube.Deployment
	Pods() []kube.Pod
}

const (
	// MaxBody caps a controller's /metrics body. Flux controllers
	// serve a few hundred KiB; anything past this is not a metrics page.
	MaxBody = 10 << 20
	// DefaultTimeout bounds a scrape of the controllers when the scraper
	// announces no deadline.
	DefaultTimeout = 10 * time.Second
	// maxParallelFetches bounds the goroutines and connections of one
	// scrape; Flux runs a handful of controllers, sharded ones a few more.
	maxParallelFetches = 16
	acceptHeader       = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
)

var (
	controllerInfoDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "controller", "info"), Type: catalog.Gauge,
		Help:   "A Flux controller Deployment in the Flux namespace, with its app.kubernetes.io/version label and first container image. Value is always 1.",
		Labels: []string{"controller", "version", "image"}})
	replicasReadyDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "controller", "replicas_ready"), Type: catalog.Gauge,
		Help:   "Ready replicas of the Flux controller's Deployment (status.readyReplicas).",
		Labels: []string{"controller"}})
	replicasDesiredDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "controller", "replicas_desired"), Type: catalog.Gauge,
		Help:   "Replicas the Flux controller's Deployment asks for (spec.replicas).",
		Labels: []string{"controller"}})
	distributionInfoDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "distribution", "info"), Type: catalog.Gauge,
		Help:   "The Flux version installed: the app.kubernetes.io/version label of the Flux CRDs, else the most common one of the controller Deployments, else \"\". Value is always 1.",
		Labels: []string{"version"}})
	podScrapeSuccessDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "controller", "scrape_success"), Type: catalog.Gauge,
		Help:   "Whether fetching and parsing the ready controller pod's /metrics succeeded on this scrape (1) or not (0).",
		Labels: []string{"controller", "pod"}})
	podScrapeDurationDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "controller", "scrape_duration_seconds"), Type: catalog.Gauge,
		Help:   "Time taken to fetch and parse the controller pod's /metrics on this scrape, in seconds.",
		Labels: []string{"controller", "pod"}})
)

// podFamily re-exports one family of a controller pod's own metrics. Series
// whose kept labels are equal are combined with merge, so that labels the
// export drops (such as the work queue's priority) never yield duplicates.
type podFamily struct {
	source string
	desc   *prometheus.Desc
	typ    prometheus.ValueType
	// labels maps each exported label, after controller and pod, to the
	// source label it comes from.
	labels [][2]string
	merge  func(a, b float64) float64
}

func addValues(a, b float64) float64 { return a + b }

func maxValue(a, b float64) float64 { return max(a, b) }

func newPodFamily(source, name, help string, typ prometheus.ValueType, merge func(a, b float64) float64, labels ...[2]string) podFamily {
	names := []string{"controller", "pod"}
	for _, l := range labels {
		names = append(names, l[0])
	}
	t := catalog.Gauge
	if typ == prometheus.CounterValue {
		t = catalog.Counter
	}
	return podFamily{source: source, typ: typ, labels: labels, merge: merge,
		desc: declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "controller", name), Type: t, Help: help, Labels: names})}
}

// Label mappings. controller-runtime's own "controller" label names the
// reconciler within the pod; here "controller" is the Flux controller, so
// the reconciler is exported as "reconciler". The work queue's "controller"
// label repeats its "name" and is dropped.
var (
	queueName  = [2]string{"name", "name"}
	reconciler = [2]string{"reconciler", "controller"}
	result     = [2]string{"result", "result"}
)

var podFamilies = []podFamily{
	newPodFamily("workqueue_depth", "workqueue_depth",
		"Items waiting in the controller's work queue, summed over priorities (controller-runtime workqueue_depth).",
		prometheus.GaugeValue, addValues, queueName),
	newPodFamily("workqueue_longest_running_processor_seconds", "workqueue_longest_running_processor_seconds",
		"How long the work queue's longest-running reconcile has been running, in seconds (controller-runtime workqueue_longest_running_processor_seconds).",
		prometheus.GaugeValue, maxValue, queueName),
	newPodFamily("workqueue_retries_total", "workqueue_retries_total",
		"Items the work queue re-queued with a delay: retries after errors and requested requeues (controller-runtime workqueue_retries_total).",
		prometheus.CounterValue, addValues, queueName),
	newPodFamily("controller_runtime_reconcile_total", "reconcile_total",
		"Reconciles by the controller's reconciler, by result: success, error, requeue or requeue_after (controller_runtime_reconcile_total).",
		prometheus.CounterValue, addValues, reconciler, result),
	newPodFamily("controller_runtime_reconcile_errors_total", "reconcile_errors_total",
		"Reconciles by the controller's reconciler that returned an error (controller_runtime_reconcile_errors_total).",
		prometheus.CounterValue, addValues, reconciler),
	newPodFamily("controller_runtime_active_workers", "active_workers",
		"Workers of the reconciler busy reconciling now (controller_runtime_active_workers).",
		prometheus.GaugeValue, addValues, reconciler),
	newPodFamily("controller_runtime_max_concurrent_reconciles", "max_concurrent_reconciles",
		"Workers the reconciler may run at once, its --concurrent setting (controller_runtime_max_concurrent_reconciles).",
		prometheus.GaugeValue, maxValue, reconciler),
	newPodFamily("process_cpu_seconds_total", "cpu_seconds_total",
		"CPU time the controller process has used, in seconds (process_cpu_seconds_total).",
		prometheus.CounterValue, addValues),
	newPodFamily("process_resident_memory_bytes", "resident_memory_bytes",
		"Resident memory of the controller process, in bytes (process_resident_memory_bytes).",
		prometheus.GaugeValue, addValues),
	newPodFamily("go_goroutines", "goroutines",
		"Goroutines in the controller process (go_goroutines).",
		prometheus.GaugeValue, addValues),
}

// reconcileDuration re-exports gotk_reconcile_duration_seconds, which Flux
// controllers keep per object, as one summary per kind: the _sum and _count
// added up over objects, with no quantiles. The per-object view is already
// in the flux_resource_* families; this keeps the series count flat. Flux
// deletes an object's series with the object, so the exporter keeps what
// it last saw of each series (see durationAccount) for the totals to stay
// counters that rate() reads without false resets.
var reconcileDurationDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "controller", "reconcile_duration_seconds"), Type: catalog.Summary,
	Help:   "Time the controller spent reconciling objects of the kind, in seconds: a summary without quantiles whose _sum and _count add up Flux's per-object gotk_reconcile_duration_seconds, keeping the last values the exporter saw of objects deleted since, so they never decrease while the controller process runs. They start over when the pod's process_start_time_seconds changes (the process restarted, as its own counters do) and when the exporter restarts.",
	Labels: []string{"controller", "pod", "kind"}})

const (
	reconcileDurationSource = "gotk_reconcile_duration_seconds"
	processStartSource      = "process_start_time_seconds"
)

// Options are what a Controllers is built from.
type Options struct {
	// State is the Flux controllers' cache; nil leaves the collector empty.
	State ControllerState
	// FluxVersion is the Flux release the CRDs are labelled with, "" when
	// they are not; nil, or "", lets the controllers vote.
	FluxVersion func() string
	// Timeout caps the fetch of the pods' metrics (--controllers.timeout);
	// zero means DefaultTimeout.
	Timeout time.Duration
	Logger  *slog.Logger
}

// New builds the collector from o.
func New(o Options) *Controllers {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controllers{state: o.State, fluxVersion: o.FluxVersion, timeout: o.Timeout, log: o.Logger, client: newPodClient()}
}

// Families lists the families the collector emits.
func Families() []catalog.Family { return declared.Families() }

// declared holds the families the collector emits.
var declared catalog.List

// Controllers reports the Flux controllers' Deployments from the cache and
// re-exports a curated set of each ready controller pod's own metrics,
// fetched from the pod on every scrape.
type Controllers struct {
	// state is nil when the caller wired no controller discovery (a library
	// user building only the resources side); the collector then reports
	// nothing.
	state       ControllerState
	fluxVersion func() string // nil without a Flux object cache
	timeout     time.Duration
	log         *slog.Logger
	client      *http.Client
	// durations carries the reconcile-duration totals of each pod from one
	// scrape to the next.
	durations durationBook
}

func newPodClient() *http.Client {
	return &http.Client{
		// Pods are dialled directly; a proxy from the environment would
		// neither reach pod IPs nor belong on this path.
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     90 * time.Second,
		},
		// A metrics endpoint has no reason to redirect, and following one
		// would let a pod send the exporter elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Update reports the Deployments, then fetches every ready pod at once,
// bounded by the scrape's deadline and the --controllers.timeout cap. A pod
// that fails costs only its own series: it shows as scrape_success 0 and
// Update still returns nil.
func (c *Controllers) Update(ctx context.Context, ch chan<- prometheus.Metric) error {
	if c.state == nil {
		return nil
	}
	deployments := c.state.Deployments()
	for _, d := range deployments {
		ch <- prometheus.MustNewConstMetric(controllerInfoDesc, prometheus.GaugeValue, 1, d.Name, d.Version, d.Image)
		ch <- prometheus.MustNewConstMetric(replicasReadyDesc, prometheus.GaugeValue, float64(d.Ready), d.Name)
		ch <- prometheus.MustNewConstMetric(replicasDesiredDesc, prometheus.GaugeValue, float64(d.Desired), d.Name)
	}
	ch <- prometheus.MustNewConstMetric(distributionInfoDesc, prometheus.GaugeValue, 1, c.distributionVersion(deployments))

	listed := c.state.Pods()
	// Taken with the listing, so that a scrape running beside this one
	// cannot forget an account this one is about to fold into.
	accounts := c.durations.sync(listed)
	var pods []kube.Pod
	for _, p := range listed {
		if p.Scrapable() {
			pods = append(pods, p)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	results := make([]podResult, len(pods))
	sem := make(chan struct{}, maxParallelFetches)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				results[i] = podResult{err: fmt.Errorf("not started before the deadline: %w", ctx.Err())}
				return
			}
			// One scrape of the pod at a time, from fetch to fold:
			// overlapping scrapes could otherwise fold an older page after a
			// newer one, and counts that seem to go back read as deleted
			// objects. The wait is not part of the pod's scrape duration.
			acct := accounts[podKey(p)]
			select {
			case acct.turn <- struct{}{}:
				defer func() { <-acct.turn }()
			case <-ctx.Done():
				results[i] = podResult{err: fmt.Errorf("wait for another scrape of the pod: %w", ctx.Err())}
				return
			}
			start := time.Now()
			metrics, err := c.scrapePod(ctx, p, &acct.durationAccount)
			results[i] = podResult{metrics: metrics, err: err, duration: time.Since(start)}
		}()
	}
	wg.Wait()

	for i, p := range pods {
		r := results[i]
		success := 1.0
		if r.err != nil {
			success = 0
			c.log.Warn("Cannot scrape Flux controller pod; its metrics are left out of this scrape",
				"controller", p.Controller, "pod", p.Name, "address", podAddress(p), "err", r.err)
		}
		for _, m := range r.metrics {
			ch <- m
		}
		ch <- prometheus.MustNewConstMetric(podScrapeSuccessDesc, prometheus.GaugeValue, success, p.Controller, p.Name)
		ch <- prometheus.MustNewConstMetric(podScrapeDurationDesc, prometheus.GaugeValue, r.duration.Seconds(), p.Controller, p.Name)
	}
	return nil
}

type podResult struct {
	metrics  []prometheus.Metric
	err      error
	duration time.Duration
}

// distributionVersion prefers the CRDs' label, which Flux's install sets
// once for the whole distribution. Without it, the controllers vote: during
// a rolling upgrade the majority wins, and a tie goes to the greater string.
func (c *Controllers) distributionVersion(deployments []kube.Deployment) string {
	if c.fluxVersion != nil {
		if v := c.fluxVersion(); v != "" {
			return v
		}
	}
	votes := map[string]int{}
	best := ""
	for _, d := range deployments {
		if d.Version == "" {
			continue
		}
		votes[d.Version]++
		if n, b := votes[d.Version], votes[best]; n > b || (n == b && d.Version > best) {
			best = d.Version
		}
	}
	return best
}

func podAddress(p kube.Pod) string {
	return net.JoinHostPort(p.IP, strconv.Itoa(int(p.Port)))
}

// scrapePod fetches, parses and re-labels one pod's metrics. Any problem
// with the response fails the whole pod, so that a partial page never
// passes for a complete one; a failed pod leaves its account as it was.
// The caller holds the pod's turn.
func (c *Controllers) scrapePod(ctx context.Context, p kube.Pod, acct *durationAccount) ([]prometheus.Metric, error) {
	fams, err := c.fetch(ctx, p)
	if err != nil {
		return nil, err
	}
	var out []prometheus.Metric
	for _, f := range podFamilies {
		ms, err := f.export(fams[f.source], p)
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
	}
	page, err := readDurations(fams)
	if err != nil {
		return nil, err
	}
	if acct.restartedBy(page) {
		c.log.Info("Flux controller process restarted; its reconcile duration totals start over",
			"controller", p.Controller, "pod", p.Name, "process_start_time_seconds", page.start)
	}
	var errs []error
	for _, k := range acct.fold(page) {
		m, err := prometheus.NewConstSummary(reconcileDurationDesc, k.count, k.sum, nil, p.Controller, p.Name, k.kind)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("re-export %s: %w", reconcileDurationSource, err)
	}
	return out, nil
}

func (c *Controllers) fetch(ctx context.Context, p kube.Pod) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+podAddress(p)+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", acceptHeader)
	req.Header.Set("User-Agent", "flux_exporter/"+version.Version)
	if deadline, ok := ctx.Deadline(); ok {
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(time.Until(deadline).Seconds(), 'f', 3, 64))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP status %s", resp.Status)
	}
	if ft := expfmt.ResponseFormat(resp.Header).FormatType(); ft != expfmt.TypeTextPlain {
		return nil, fmt.Errorf("GET /metrics: content type %q is not the Prometheus text format", resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read /metrics: %w", err)
	}
	if len(body) > MaxBody {
		return nil, fmt.Errorf("read /metrics: body larger than %d bytes", MaxBody)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return fams, nil
}

// export re-labels and merges one family of a pod. A family the pod does
// not serve yields nothing.
func (f podFamily) export(fam *dto.MetricFamily, p kube.Pod) ([]prometheus.Metric, error) {
	if fam == nil {
		return nil, nil
	}
	merged := newSeriesSet()
	for _, m := range fam.GetMetric() {
		v, ok := scalar(m)
		if !ok {
			return nil, fmt.Errorf("%s has type %s, not a counter or gauge", f.source, fam.GetType())
		}
		have := labelMap(m)
		key := make([]string, 0, 2+len(f.labels))
		key = append(key, p.Controller, p.Name)
		for _, l := range f.labels {
			key = append(key, have[l[1]])
		}
		merged.add(key, v, f.merge)
	}
	return merged.metrics(func(lv []string, s series) (prometheus.Metric, error) {
		return prometheus.NewConstMetric(f.desc, f.typ, s.value, lv...)
	})
}

// durationBook holds the reconcile-duration account of each controller pod
// the cache lists, by namespace and name. Its zero value is ready to use.
type durationBook struct {
	mu   sync.Mutex
	pods map[string]*podAccount
}

// podAccount is one pod's account. turn admits one scrape of the pod at a
// time; the account is read and written only while holding it.
type podAccount struct {
	turn chan struct{}
	durationAccount
}

func podKey(p kube.Pod) string { return p.Namespace + "/" + p.Name }

// sync forgets the accounts of pods the cache no longer lists, since their
// series end with them and memory stays bounded by the live pods, and
// returns the accounts of the listed ones, opening one for a pod not seen
// before: a new pod is a new series, whose totals start from its own page.
// A pod that is only unready keeps its account, so that its totals do not
// start over when it turns ready again.
func (b *durationBook) sync(listed []kube.Pod) map[string]*podAccount {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]*podAccount, len(listed))
	for _, p := range listed {
		k := podKey(p)
		a, ok := b.pods[k]
		if !ok {
			a = &podAccount{turn: make(chan struct{}, 1)}
		}
		out[k] = a
	}
	// Never changed once handed out: the next sync builds a new map.
	b.pods = out
	return out
}

// durationTotal is a _sum and _count pair.
type durationTotal struct {
	sum   float64
	count uint64
}

func (t durationTotal) add(o durationTotal) durationTotal {
	return durationTotal{sum: t.sum + o.sum, count: t.count + o.count}
}

// objectDurations is one source series: an object's, in Flux.
type objectDurations struct {
	kind string
	durationTotal
}

// kindDurations is the exported total of one kind.
type kindDurations struct {
	kind string
	durationTotal
}

// durationPage is what one page of a pod says about reconcile durations.
type durationPage struct {
	// start is the page's process_start_time_seconds, if hasStart.
	start    float64
	hasStart bool
	// series are the source series keyed by all their labels.
	series map[string]objectDurations
}

// readDurations takes the source series and the process start time from a
// parsed page. The source may be a histogram, as Flux's is, or a summary.
func readDurations(fams map[string]*dto.MetricFamily) (durationPage, error) {
	page := durationPage{series: map[string]objectDurations{}}
	if ms := fams[processStartSource].GetMetric(); len(ms) == 1 {
		v, ok := scalar(ms[0])
		// NaN would differ from itself and read as a restart on every page.
		page.start, page.hasStart = v, ok && !math.IsNaN(v)
	}
	fam := fams[reconcileDurationSource]
	for _, m := range fam.GetMetric() {
		var d durationTotal
		switch {
		case m.Histogram != nil:
			d = durationTotal{sum: m.GetHistogram().GetSampleSum(), count: m.GetHistogram().GetSampleCount()}
		case m.Summary != nil:
			d = durationTotal{sum: m.GetSummary().GetSampleSum(), count: m.GetSummary().GetSampleCount()}
		default:
			return durationPage{}, fmt.Errorf("%s has type %s, not a histogram or summary", reconcileDurationSource, fam.GetType())
		}
		key := sourceKey(m)
		s := page.series[key]
		s.kind = labelMap(m)["kind"]
		s.durationTotal = s.durationTotal.add(d)
		page.series[key] = s
	}
	return page, nil
}

// sourceKey names a source series by all its labels, in name order.
func sourceKey(m *dto.Metric) string {
	pairs := make([]string, 0, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		// A label value cannot hold \xff in valid UTF-8, so it separates safely.
		pairs = append(pairs, lp.GetName()+"\xff"+lp.GetValue())
	}
	slices.Sort(pairs)
	return strings.Join(pairs, "\xff")
}

// durationAccount turns a pod's per-object reconcile durations, whose
// series Flux deletes with their objects, into per-kind totals that only
// grow while the pod's process runs. The rule:
//
//   - a series on the page counts with its values on the page;
//   - a series seen before that is gone from the page (its object was
//     deleted), or whose count or sum went back (its object was deleted and
//     re-created under the same name between two scrapes, and the new
//     series began from zero), leaves its last seen values in the kind's
//     retained total;
//   - when the page's process_start_time_seconds differs from the last one
//     seen, the process restarted: its own counters, the other
//     flux_controller_* counters of the pod among them, began again from
//     zero, so the account does too, and rate() reads one true reset. A
//     page without a start time cannot tell a restart from re-created
//     objects; its series that went back are then retained one by one,
//     which keeps the totals growing and true to what was observed.
//
// One series going back is not taken for a restart: re-creating an object
// does that too, and starting the whole pod over would make rate() read
// every reconcile the pod ever did as new, the very spike this avoids.
//
// Observations of an object after the pod's last scrape and before its
// deletion were never seen and are not counted.
type durationAccount struct {
	start    float64
	hasStart bool
	// live holds the last values seen of each source series.
	live map[string]objectDurations
	// retained adds up, per kind, the last values of series gone since.
	retained map[string]durationTotal
	// exported is the last total exported per kind. A series moving from
	// live to retained adds the same numbers in another order, and the
	// float sum may come out an ulp lower; rate() would read that as a
	// reset, so an exported sum never goes below the last one.
	exported map[string]durationTotal
}

// restartedBy tells whether the page comes from another process than the
// last page that had a start time. The start time is fixed for the life of
// a process, so any change means a new one.
func (a *durationAccount) restartedBy(page durationPage) bool {
	return page.hasStart && a.hasStart && page.start != a.start
}

// fold takes the pod's next page into the account and returns the totals
// to export, by kind in name order. A kind stays while any of its objects
// has been seen, even when none is left.
func (a *durationAccount) fold(page durationPage) []kindDurations {
	if a.restartedBy(page) {
		*a = durationAccount{}
	}
	if page.hasStart {
		a.start, a.hasStart = page.start, true
	}
	if a.retained == nil {
		a.retained = map[string]durationTotal{}
		a.exported = map[string]durationTotal{}
	}
	for key, last := range a.live {
		now, ok := page.series[key]
		if !ok || now.count < last.count || now.sum < last.sum {
			a.retained[last.kind] = a.retained[last.kind].add(last.durationTotal)
		}
	}
	a.live = page.series

	totals := maps.Clone(a.retained)
	// In key order, so that the same page adds up to the same sum.
	for _, key := range slices.Sorted(maps.Keys(a.live)) {
		s := a.live[key]
		totals[s.kind] = totals[s.kind].add(s.durationTotal)
	}
	out := make([]kindDurations, 0, len(totals))
	for _, kind := range slices.Sorted(maps.Keys(totals)) {
		t := totals[kind]
		t.sum = max(t.sum, a.exported[kind].sum)
		a.exported[kind] = t
		out = append(out, kindDurations{kind: kind, durationTotal: t})
	}
	return out
}

// seriesSet merges series by their exported label values, keeping the
// order in which each first appeared.
type seriesSet struct {
	order []string
	byKey map[string]*seriesEntry
}

type series struct {
	value float64
}

type seriesEntry struct {
	labels []string
	series
}

func newSeriesSet() *seriesSet { return &seriesSet{byKey: map[string]*seriesEntry{}} }

func (s *seriesSet) add(labels []string, value float64, merge func(a, b float64) float64) {
	// A label value cannot hold \xff in valid UTF-8, so it separates safely.
	key := strings.Join(labels, "\xff")
	e, ok := s.byKey[key]
	if !ok {
		s.byKey[key] = &seriesEntry{labels: labels, series: series{value: value}}
		s.order = append(s.order, key)
		return
	}
	e.value = merge(e.value, value)
}

func (s *seriesSet) metrics(build func([]string, series) (prometheus.Metric, error)) ([]prometheus.Metric, error) {
	out := make([]prometheus.Metric, 0, len(s.order))
	var errs []error
	for _, key := range s.order {
		e := s.byKey[key]
		m, err := build(e.labels, e.series)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("re-export: %w", err)
	}
	return out, nil
}

func scalar(m *dto.Metric) (float64, bool) {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue(), true
	case m.Counter != nil:
		return m.GetCounter().GetValue(), true
	case m.Untyped != nil:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

func labelMap(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}
