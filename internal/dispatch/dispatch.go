// Package dispatch counts the notifications notification-controller could
// not deliver, from the NotificationDispatchFailed Events it records on the
// Alert that matched.
//
// notification-controller v1.9.3 (internal/server/event_handlers.go) records
// a core/v1 Event on the Alert, type Warning, reason
// NotificationDispatchFailed, when building the notification fails
// (handleEvent, "failed to dispatch notification for ...") and when the
// Provider's address does not accept it (dispatchNotification, "failed to
// send notification for ..."). No Flux object's status holds this: the Alert
// and the Provider stay as they were, and the events reach nobody.
//
// client-go's recorder aggregates repeats of one Event into its count field
// and lastTimestamp, and drops Events past a burst of 25 per object, refilled
// one per five minutes (tools/record events_cache.go); the counts are
// therefore at least, not exactly, the failed deliveries.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
)

// Reason is the Event reason notification-controller records on an Alert
// whose notification was not delivered.
const Reason = "NotificationDispatchFailed"

// declared holds the dispatch failure families, for the metrics reference.
var declared catalog.List

// Families lists the families this package emits.
func Families() []catalog.Family { return declared.Families() }

var (
	labels       = []string{"kind", "name", "exported_namespace", "provider"}
	failuresDesc = declared.Declare(catalog.Family{Name: "flux_notification_dispatch_failures_total", Type: catalog.Counter,
		Help:   "Notifications notification-controller failed to deliver for this Alert (provider: its spec.providerRef.name as the exporter last saw it), counted from the NotificationDispatchFailed Events it records on the Alert (their count field) since the exporter started; Events already there at start are the baseline, so a restart is a counter reset, not a burst. client-go's recorder drops Events past 25 per Alert and five minutes, so this is a lower bound.",
		Labels: labels})
	lastDesc = declared.Declare(catalog.Family{Name: "flux_notification_last_dispatch_failure_timestamp_seconds", Type: catalog.Gauge,
		Help:   "When notification-controller last failed to deliver a notification for this Alert (provider: its spec.providerRef.name), in Unix seconds: the newest lastTimestamp of the NotificationDispatchFailed Events the API server still keeps (its --event-ttl, one hour by default).",
		Labels: labels})
)

// Config configures a Watcher.
type Config struct {
	Client kubernetes.Interface
	// Namespaces to watch; empty watches all. Watches skips the rest (the
	// exporter's --namespaces-exclude).
	Namespaces []string
	Watches    func(namespace string) bool
	// Provider returns the name of the Provider an Alert sends to
	// (spec.providerRef.name), or "" when the Alert is not known.
	Provider func(namespace, alert string) string
	// Exists tells whether the Alert is still there, as kube.Watcher.Exists:
	// the series of a deleted Alert are dropped.
	Exists func(kind, namespace, name string) (exists, watched bool)
	// Keeps tells whether this replica exports the Alert with this UID
	// (the Event's involvedObject.uid), so that shards split the Alerts as
	// they split every Flux object; nil keeps all.
	Keeps func(uid types.UID) bool
	// Resync is the informers' resync period; 0 disables it.
	Resync time.Duration
}

// key is one series' Alert. Its Provider is looked up when scraped: the
// Alert may reach the exporter's cache after its Events do.
type key struct{ namespace, alert string }

// failure is the part of an Event the counts need.
type failure struct {
	uid, alertUID    types.UID
	namespace, alert string
	count            int32
	last             time.Time
}

// Watcher watches NotificationDispatchFailed Events and is the
// prometheus.Collector of what they say.
type Watcher struct {
	cfg       Config
	informers []cache.SharedIndexInformer

	mu sync.Mutex
	// seen is each Event's count as last seen, so that an update adds only
	// the difference.
	seen  map[types.UID]int32
	total map[key]float64
	last  map[key]time.Time
}

// New returns a Watcher over cfg.Namespaces (all when empty), or an error
// without cfg.Client. Call Start.
func New(cfg Config) (*Watcher, error) {
	if cfg.Client == nil {
		return nil, errors.New("dispatch: no Kubernetes client")
	}
	w := &Watcher{cfg: cfg, seen: map[types.UID]int32{}, total: map[key]float64{}, last: map[key]time.Time{}}
	namespaces := cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	for _, ns := range namespaces {
		w.informers = append(w.informers, w.informer(ns))
	}
	return w, nil
}

// informer lists and watches only this reason's Events on Alerts: the
// API server filters them (Event field selectors), so the rest of a busy
// cluster's Events never reach the exporter.
func (w *Watcher) informer(namespace string) cache.SharedIndexInformer {
	sel := fields.AndSelectors(
		fields.OneTermEqualSelector("reason", Reason),
		fields.OneTermEqualSelector("involvedObject.kind", "Alert"),
	).String()
	lw := cache.NewFilteredListWatchFromClient(w.cfg.Client.CoreV1().RESTClient(), "events", namespace,
		func(o *metav1.ListOptions) { o.FieldSelector = sel })
	inf := cache.NewSharedIndexInformer(lw, &corev1.Event{}, w.cfg.Resync, cache.Indexers{})
	_ = inf.SetTransform(toFailure)
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc:    func(obj any, initial bool) { w.observe(obj, initial) },
		UpdateFunc: func(_, obj any) { w.observe(obj, false) },
		DeleteFunc: w.forget,
	})
	return inf
}

// toFailure keeps what the counts need of an Event, so the cache holds a
// few words per Event instead of its message.
func toFailure(obj any) (any, error) {
	ev, ok := obj.(*corev1.Event)
	if !ok {
		return obj, nil
	}
	return &failure{
		uid: ev.UID, alertUID: ev.InvolvedObject.UID, namespace: ev.InvolvedObject.Namespace, alert: ev.InvolvedObject.Name,
		count: max(ev.Count, 1), last: eventTime(ev),
	}, nil
}

// GetObjectMeta gives the informer's store the Event's key. The key is the
// UID: Events are never renamed, and the store needs nothing else.
func (f *failure) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: string(f.uid)}
}

// eventTime is when the Event last happened: lastTimestamp for client-go's
// core/v1 recorder, which notification-controller uses; the events.k8s.io
// fields for recorders that write those.
func eventTime(ev *corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	case ev.Series != nil && !ev.Series.LastObservedTime.IsZero():
		return ev.Series.LastObservedTime.Time
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	}
	return ev.FirstTimestamp.Time
}

// observe adds what an Event's count grew by since it was last seen. The
// Events of the first list only set the baseline: they happened before this
// process, and counting them would make every restart a burst of failures.
func (w *Watcher) observe(obj any, initial bool) {
	f, ok := obj.(*failure)
	if !ok || (w.cfg.Watches != nil && !w.cfg.Watches(f.namespace)) || (w.cfg.Keeps != nil && !w.cfg.Keeps(f.alertUID)) {
		return
	}
	k := key{namespace: f.namespace, alert: f.alert}
	w.mu.Lock()
	defer w.mu.Unlock()
	prev, known := w.seen[f.uid]
	w.seen[f.uid] = f.count
	switch {
	case initial:
		w.total[k] += 0 // the series exists from the start, for rate()
	case !known:
		w.total[k] += float64(f.count)
	case f.count > prev:
		w.total[k] += float64(f.count - prev)
	}
	if f.last.After(w.last[k]) {
		w.last[k] = f.last
	}
}

func (w *Watcher) provider(k key) string {
	if w.cfg.Provider == nil {
		return ""
	}
	return w.cfg.Provider(k.namespace, k.alert)
}

// forget drops a deleted Event's count; its failures stay in the totals.
func (w *Watcher) forget(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if f, ok := obj.(*failure); ok {
		w.mu.Lock()
		delete(w.seen, f.uid)
		w.mu.Unlock()
	}
}

// Served tells whether the API server serves core/v1 Events; a server
// with only the Flux CRDs (the sandbox's) has none to watch.
func Served(client kubernetes.Interface) (bool, error) {
	list, err := client.Discovery().ServerResourcesForGroupVersion("v1")
	if err != nil {
		return false, fmt.Errorf("discovering core/v1 resources: %w", err)
	}
	for _, r := range list.APIResources {
		if r.Name == "events" {
			return true, nil
		}
	}
	return false, nil
}

// Start runs the informers until ctx is done and waits, at most until ctx
// is done, for their first lists.
func (w *Watcher) Start(ctx context.Context) error {
	synced := make([]cache.InformerSynced, 0, len(w.informers))
	for _, inf := range w.informers {
		go inf.Run(ctx.Done())
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("listing %s Events: %w", Reason, ctx.Err())
	}
	return nil
}

// Describe implements prometheus.Collector.
func (w *Watcher) Describe(ch chan<- *prometheus.Desc) {
	ch <- failuresDesc
	ch <- lastDesc
}

// Collect implements prometheus.Collector. The series of an Alert that is
// gone are dropped here, so a deleted Alert leaves none behind.
func (w *Watcher) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, n := range w.total {
		if w.cfg.Exists != nil {
			if exists, watched := w.cfg.Exists("Alert", k.namespace, k.alert); watched && !exists {
				delete(w.total, k)
				delete(w.last, k)
				continue
			}
		}
		provider := w.provider(k)
		send(ch, failuresDesc, prometheus.CounterValue, n, k, provider)
		if t, ok := w.last[k]; ok {
			send(ch, lastDesc, prometheus.GaugeValue, float64(t.UnixNano())/1e9, k, provider)
		}
	}
}

// send writes one series, or nothing when its labels are not valid UTF-8:
// Collect must not panic on what the API server holds.
func send(ch chan<- prometheus.Metric, d *prometheus.Desc, vt prometheus.ValueType, v float64, k key, provider string) {
	if m, err := prometheus.NewConstMetric(d, vt, v, "Alert", k.alert, k.namespace, provider); err == nil {
		ch <- m
	}
}
