package events

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
)

// declared holds the event families, for the metrics reference.
var declared catalog.List

// Families lists the families this package emits.
func Families() []catalog.Family { return declared.Families() }

var (
	eventsTotalDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "events", "total"), Type: catalog.Counter,
		Help:   "Total number of Flux events received from notification-controller, per object, severity, reason and reporting controller.",
		Labels: []string{"kind", "name", "exported_namespace", "severity", "reason", "controller"}})
	lastTimestampDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "event", "last_timestamp_seconds"), Type: catalog.Gauge,
		Help:   "Time of the newest Flux event received per object and severity, in seconds since the Unix epoch, as stamped by the reporting controller, or the time of receipt when the event has none.",
		Labels: []string{"kind", "name", "exported_namespace", "severity"}})
	revisionInfoDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "event", "revision_info"), Type: catalog.Gauge,
		Help:   "Newest source revision named in a Flux event for the object, with the origin revision the same event named (originRevision metadata: the Git commit an OCI artifact was built from), empty when it named none; the value is always 1.",
		Labels: []string{"kind", "name", "exported_namespace", "revision", "origin_revision"}})
	requestsTotalDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "events", "requests_total"), Type: catalog.Counter,
		Help:   "Total number of requests to the Flux events webhook, by HTTP status code of the answer.",
		Labels: []string{"code"}})
	droppedTotalDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "events", "dropped_total"), Type: catalog.Counter,
		Help:   "Total number of valid Flux events that were accepted but not recorded, by cause.",
		Labels: []string{"cause"}})
)

// causeMaxSeries is the flux_events_dropped_total cause for events that would
// have grown the per-object state past Config.MaxSeries.
const causeMaxSeries = "max_series"

// knownCodes are exported from the start so that rate() over them works
// before the first request of each kind arrives.
var knownCodes = []int{202, 400, 401, 405, 413, 415}

type objectKey struct{ kind, namespace, name string }

type counterKey struct{ severity, reason, controller string }

// objectState is everything kept for one involved object. Each map entry and
// a non-empty revision is one exported series.
type objectState struct {
	counts       map[counterKey]float64
	last         map[string]time.Time // by severity
	revision     string
	revisionTime time.Time
	// originRevision came with revision, in the same event.
	originRevision string
	absentSince    time.Time // zero unless the cache reports the object deleted
	lastReceived   time.Time // receipt of the newest accepted event, by r.now
}

func (s *objectState) series() int {
	n := len(s.counts) + len(s.last)
	if s.revision != "" {
		n++
	}
	return n
}

// record applies one accepted event, all or nothing: when the new series it
// needs would exceed the cap, nothing changes and the event counts as dropped.
// The caller holds r.mu.
func (r *Receiver) record(e *event, controller string, received time.Time) {
	key := objectKey{e.InvolvedObject.Kind, e.InvolvedObject.Namespace, e.InvolvedObject.Name}
	ck := counterKey{e.Severity, e.Reason, controller}
	ts := e.Timestamp.Time
	if ts.IsZero() {
		ts = received
	}
	rev := e.revision()

	st, ok := r.objects[key]
	need := 0
	switch {
	case !ok:
		need = 2 // counter and timestamp
		if rev != "" {
			need++
		}
	default:
		if _, has := st.counts[ck]; !has {
			need++
		}
		if _, has := st.last[e.Severity]; !has {
			need++
		}
		if rev != "" && st.revision == "" {
			need++
		}
	}
	if r.series+need > r.maxSeries {
		r.dropped[causeMaxSeries]++
		return
	}
	if !ok {
		st = &objectState{counts: map[counterKey]float64{}, last: map[string]time.Time{}}
		r.objects[key] = st
	}
	r.series += need

	// The receipt time, not the event's own timestamp: the TTL of an object
	// the cache cannot see must not depend on a sender's clock.
	st.lastReceived = received
	st.counts[ck]++
	if prev, has := st.last[e.Severity]; !has || ts.After(prev) {
		st.last[e.Severity] = ts
	}
	// Retried or reordered deliveries must not roll the revision back; at
	// equal (second-precision) timestamps the later delivery wins.
	if rev != "" && (st.revision == "" || !ts.Before(st.revisionTime)) {
		st.revision, st.revisionTime, st.originRevision = rev, ts, e.originRevision()
	}
}

// presence is what Exists said of one object at a sweep.
type presence struct{ exists, watched bool }

// sweep drops the state of objects that Exists has reported deleted for at
// least the TTL, and of objects it does not watch that have had no event for
// the TTL: for those the cache can never report a deletion, so receipt is
// the only clock there is. Exists is called without holding the lock,
// because it may consult an informer cache with locks of its own.
func (r *Receiver) sweep() {
	if r.exists == nil {
		return
	}
	r.mu.Lock()
	keys := make([]objectKey, 0, len(r.objects))
	for k := range r.objects {
		keys = append(keys, k)
	}
	r.mu.Unlock()

	seen := make(map[objectKey]presence, len(keys))
	for _, k := range keys {
		exists, watched := r.exists(k.kind, k.namespace, k.name)
		seen[k] = presence{exists, watched}
	}

	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range seen {
		st, ok := r.objects[k]
		if !ok {
			continue
		}
		switch {
		case !p.watched:
			// A deletion seen while the object was watched no longer counts.
			st.absentSince = time.Time{}
			if now.Sub(st.lastReceived) >= r.ttl {
				r.drop(k, st, "Dropped event series of an object outside the watched namespaces or kinds after no event for the TTL")
			}
		case p.exists:
			st.absentSince = time.Time{}
		case st.absentSince.IsZero():
			st.absentSince = now
		case now.Sub(st.absentSince) >= r.ttl:
			r.drop(k, st, "Dropped event series of a deleted object")
		}
	}
}

// drop forgets one object's state. The caller holds r.mu.
func (r *Receiver) drop(k objectKey, st *objectState, msg string) {
	r.series -= st.series()
	delete(r.objects, k)
	r.log.Debug(msg, "kind", k.kind, "namespace", k.namespace, "name", k.name, "ttl", r.ttl)
}

// Describe implements prometheus.Collector.
func (r *Receiver) Describe(ch chan<- *prometheus.Desc) {
	ch <- eventsTotalDesc
	ch <- lastTimestampDesc
	ch <- revisionInfoDesc
	ch <- requestsTotalDesc
	ch <- droppedTotalDesc
}

// Collect implements prometheus.Collector. Metrics are built under the lock
// and sent after it is released, so a slow scrape never blocks the webhook.
func (r *Receiver) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	out := make([]prometheus.Metric, 0, r.series+len(r.requests)+len(r.dropped))
	add := func(desc *prometheus.Desc, vt prometheus.ValueType, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(desc, vt, v, labels...)
		if err != nil {
			r.log.Error("Failed to build event metric", "metric", desc.String(), "err", err)
			return
		}
		out = append(out, m)
	}
	for k, st := range r.objects {
		for ck, n := range st.counts {
			add(eventsTotalDesc, prometheus.CounterValue, n, k.kind, k.name, k.namespace, ck.severity, ck.reason, ck.controller)
		}
		for sev, ts := range st.last {
			add(lastTimestampDesc, prometheus.GaugeValue, float64(ts.UnixNano())/1e9, k.kind, k.name, k.namespace, sev)
		}
		if st.revision != "" {
			add(revisionInfoDesc, prometheus.GaugeValue, 1, k.kind, k.name, k.namespace, st.revision, st.originRevision)
		}
	}
	for code, n := range r.requests {
		add(requestsTotalDesc, prometheus.CounterValue, n, strconv.Itoa(code))
	}
	for cause, n := range r.dropped {
		add(droppedTotalDesc, prometheus.CounterValue, n, cause)
	}
	r.mu.Unlock()

	for _, m := range out {
		ch <- m
	}
}
