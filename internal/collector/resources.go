package collector

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
	"github.com/flux-exporter/flux_exporter/internal/controllers"
	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// FluxState is the read side of the Flux object caches.
type FluxState interface {
	// State lists every watched kind with its records, sorted by kind.
	State() []kube.KindState[*Record]
	// Sharding is the shard of the Flux objects the caches keep.
	Sharding() kube.Sharding
	// Exists tells whether the object is in the caches (exists) and
	// whether its kind is synced and its namespace watched (watched): an
	// object of a kind or namespace not watched is unknown, not missing.
	Exists(kind, namespace, name string) (exists, watched bool)
	// FluxVersion is the Flux release the CRDs are labelled with, "" when
	// they are not.
	FluxVersion() string
}

// Deps are what collectors are built from.
type Deps struct {
	Flux FluxState
	// Decoder is the one whose Decode the Flux cache transforms objects
	// with: the scrape reads its options and sweeps its delivery state.
	Decoder *Decoder
	// Controllers is the Flux controllers' cache; nil leaves the
	// controllers collector empty.
	Controllers controllers.ControllerState
	// ControllersTimeout caps the fetch of the controller pods' metrics
	// (--controllers.timeout); zero means controllers.DefaultTimeout.
	ControllersTimeout time.Duration
	Logger             *slog.Logger
}

func (d Deps) logger() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger
}

func init() {
	register("resources", true, func(d Deps) (Collector, error) {
		if d.Flux == nil {
			return nil, errors.New("no Flux object cache")
		}
		if d.Decoder == nil {
			return nil, errors.New("no Decoder: pass the one the Flux cache's transform uses")
		}
		return &Resources{state: d.Flux, delivery: d.Decoder.delivery, graph: &graphCache{logger: d.logger(), on: d.Decoder.on}}, nil
	})
}

// kindLabels identify a kind in the kind-level series. The group is part of
// it: --flux.api-groups may name two groups that each serve a Kind of the
// same name, and their series must not collide.
var kindLabels = []string{"group", "kind"}

var (
	kindInfoDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "kind_info"), Type: catalog.Gauge,
		Help:   "A Flux kind discovered from its CustomResourceDefinition, at the version that is read. Value is always 1.",
		Labels: []string{"group", "version", "kind", "resource"}})
	kindObjectsDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "kind_objects"), Type: catalog.Gauge,
		Help:   "Objects of the kind in the exporter's cache: with sharding, this replica's shard of them, so the sum over the replicas is the cluster's count.",
		Labels: kindLabels})
	kindSyncedDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "kind_synced"), Type: catalog.Gauge,
		Help:   "Whether the kind's cache has completed its first list (1) or not (0); an unsynced kind reports no objects.",
		Labels: kindLabels})
	kindForbiddenDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "kind_forbidden"), Type: catalog.Gauge,
		Help:   "Whether the API server answers 403 Forbidden to the exporter's list or watch of the kind (1) or not (0). A forbidden kind stays unsynced and reports no objects, and /-/ready does not wait for it; grant get, list, watch on its group and resource.",
		Labels: kindLabels})
	watchErrorsDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "watch_errors_total"), Type: catalog.Counter,
		Help:   "Failed list or watch requests for the kind (connection errors and HTTP errors, Forbidden included); the cache keeps serving the last known objects while client-go retries.",
		Labels: kindLabels})
	// The shard pair follows kube-state-metrics' kube_state_metrics_shard_ordinal
	// and kube_state_metrics_total_shards, so the same dashboards and alerts
	// patterns apply.
	shardOrdinalDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "shard_ordinal"), Type: catalog.Gauge,
		Help:   "This replica's shard (--shard, or its StatefulSet pod's ordinal with --pod), as a value and a label; it exports only the Flux objects of this shard. 0 when unsharded.",
		Labels: []string{"shard_ordinal"}})
	totalShardsDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "total_shards"), Type: catalog.Gauge,
		Help:   "The number of shards the Flux objects are split into (--total-shards, or the StatefulSet's replicas with --pod); 1 when unsharded. Sum per-object and kind-level series over the replicas of a job; each object is on exactly one.",
		Labels: nil})
	objectErrorsDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "object_errors_total"), Type: catalog.Counter,
		Help:   "Fields of the kind's objects that were present but could not be read (wrong type or format); the rest of each object is still reported.",
		Labels: kindLabels})
)

// Resources reports every Flux object in the caches. It makes no API calls.
type Resources struct {
	state FluxState
	// delivery is the tracker the cache's Decoder feeds.
	delivery *deliveryTracker
	// graph keeps the dependency graph's series between scrapes; nil
	// leaves them out.
	graph *graphCache
}

var _ Collector = (*Resources)(nil)

// Update emits the kind-level and shard series and computes the scrape's
// dependency graph; the per-object series leave through the writer of
// Exporter.Scrape.
func (c *Resources) Update(ctx context.Context, ch chan<- prometheus.Metric) error {
	sh := c.state.Sharding().Normalized()
	sharded := sh.Enabled()
	ch <- prometheus.MustNewConstMetric(shardOrdinalDesc, prometheus.GaugeValue, float64(sh.Shard), strconv.Itoa(sh.Shard))
	ch <- prometheus.MustNewConstMetric(totalShardsDesc, prometheus.GaugeValue, float64(sh.Total))
	sc := scrapeOf(ctx)
	states := sc.objects(c.state)
	c.delivery.sweep(states)
	sc.groups = c.delivery.records()
	// A shard sees only its own objects: a reference to another shard's
	// object would read as missing, and counts and roots would stop at the
	// shard's edge. So only the references themselves, which are per
	// object, are reported when sharded (docs/flux-semantics.md).
	if c.graph != nil && !sharded {
		sc.graph = c.graph.records(sc, c.state.Exists)
	}
	for _, ks := range states {
		k := ks.Kind
		ch <- prometheus.MustNewConstMetric(kindInfoDesc, prometheus.GaugeValue, 1, k.Group, k.Version, k.Kind, k.Resource)
		ch <- prometheus.MustNewConstMetric(kindSyncedDesc, prometheus.GaugeValue, boolValue(ks.Synced), k.Group, k.Kind)
		ch <- prometheus.MustNewConstMetric(kindForbiddenDesc, prometheus.GaugeValue, boolValue(ks.Forbidden), k.Group, k.Kind)
		ch <- prometheus.MustNewConstMetric(kindObjectsDesc, prometheus.GaugeValue, float64(len(ks.Records)), k.Group, k.Kind)
		ch <- prometheus.MustNewConstMetric(watchErrorsDesc, prometheus.CounterValue, float64(ks.WatchErrors), k.Group, k.Kind)
		ch <- prometheus.MustNewConstMetric(objectErrorsDesc, prometheus.CounterValue, float64(ks.ObjectErrors), k.Group, k.Kind)
	}
	return nil
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
