package kube

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Kind is a discovered Flux kind, at the version kubectl would read it.
type Kind struct {
	Group      string
	Version    string
	Kind       string
	Resource   string
	Namespaced bool
	// FluxVersion is the CRD's app.kubernetes.io/version label, which Flux's
	// install sets to the distribution version.
	FluxVersion string
}

// Transform turns an object into the compact record the cache keeps, and
// reports the fields it could not read. The record must carry its namespace
// and name for the cache key. It must not retain u: the point is that the
// full object is garbage once it returns. prev is the record the cache holds
// for the same namespace and name, nil for a new object: what a record must
// remember across updates (when a failure started) comes from it, so it
// leaves the cache with the object.
type Transform[R metav1.ObjectMetaAccessor] func(k Kind, u *unstructured.Unstructured, prev R) (R, []error)

// WatcherOptions configure a Watcher.
type WatcherOptions[R metav1.ObjectMetaAccessor] struct {
	// APIGroups are the groups whose Established CRDs are watched; empty
	// means DefaultAPIGroups.
	APIGroups []string
	// Namespaces limits the watch to these namespaces; empty means all.
	// Duplicates are dropped.
	Namespaces []string
	// ExcludeNamespaces are never watched.
	ExcludeNamespaces []string
	// Sharding keeps only one shard's objects; the zero value keeps all.
	// Reshard changes it while running.
	Sharding Sharding
	// DeletedRetention is how long, when sharded, Exists reports an object
	// of the shard as deleted after the watch said so; past it, and for any
	// object it never saw, it reports the object as not watched. Set it to
	// the longest time a caller waits on a deletion (--events.series-ttl);
	// zero keeps no record of deletions.
	DeletedRetention time.Duration
	Transform        Transform[R]
	Logger           *slog.Logger
}

// KindState is what the collector reads about one kind on a scrape.
type KindState[R any] struct {
	Kind   Kind
	Synced bool
	// Forbidden is true while the API server answers 403 to a list or
	// watch of the kind (in any watched namespace): it cannot sync until
	// RBAC grants it, so readiness does not wait for it.
	Forbidden    bool
	Records      []R
	WatchErrors  uint64
	ObjectErrors uint64
}

// Watcher discovers Flux kinds from CRDs and keeps one informer cache per
// kind (per namespace when --namespaces is given). Kinds come and go with
// their CRDs, without a restart.
type Watcher[R metav1.ObjectMetaAccessor] struct {
	client dynamic.Interface
	opts   WatcherOptions[R]
	log    *slog.Logger
	groups map[string]bool // opts.APIGroups

	crds cache.SharedIndexInformer

	mu       sync.RWMutex
	ctx      context.Context
	kinds    map[string]*kindWatch // by group/kind
	sharding Sharding              // what the informers of w.kinds keep
	// reshardMu makes one Reshard wait for the one before it.
	reshardMu sync.Mutex
}

type kindWatch struct {
	kind Kind
	// sharding is what the informers keep; dead is the shard's deletions
	// (nil when unsharded).
	sharding Sharding
	dead     *tombstones
	// informers has one informer per watched namespace ("" for all), and
	// scopes the state of the requests of the informer at the same index.
	informers    []cache.SharedIndexInformer
	scopes       []*scope
	stop         context.CancelFunc
	watchErrors  atomic.Uint64
	objectErrors atomic.Uint64
}

// scope is what failureCounter learns about the requests of one informer.
// It is per namespace because a RoleBinding can grant one namespace of
// --namespaces and not another.
type scope struct {
	namespace string // "" for a cluster-wide informer
	failing   atomic.Bool
	forbidden atomic.Bool
}

// NewWatcher builds a Watcher on its own client; Run starts it.
func NewWatcher[R metav1.ObjectMetaAccessor](cfg *rest.Config, opts WatcherOptions[R]) (*Watcher[R], error) {
	if opts.Transform == nil {
		return nil, fmt.Errorf("kube: WatcherOptions.Transform is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if len(opts.APIGroups) == 0 {
		opts.APIGroups = DefaultAPIGroups
	}
	if err := ValidateAPIGroups(opts.APIGroups); err != nil {
		return nil, err
	}
	// One informer per listed namespace: a namespace listed twice would
	// otherwise be watched, and its objects reported, twice.
	opts.Namespaces = dedupe(opts.Namespaces)
	opts.ExcludeNamespaces = dedupe(opts.ExcludeNamespaces)
	if err := ValidateNamespaces(opts.Namespaces, opts.ExcludeNamespaces); err != nil {
		return nil, err
	}
	w := &Watcher[R]{opts: opts, log: opts.Logger, kinds: map[string]*kindWatch{}, groups: map[string]bool{}, sharding: opts.Sharding}
	for _, g := range opts.APIGroups {
		w.groups[g] = true
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &failureCounter{next: rt, scopeOf: w.scopeOfPath, log: w.log}
	})
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	w.client = client
	w.crds = dynamicinformer.NewFilteredDynamicInformer(client, crdGVR, metav1.NamespaceAll, 0, cache.Indexers{}, nil).Informer()
	if err := w.crds.SetTransform(w.transformCRD); err != nil {
		return nil, fmt.Errorf("set CRD transform: %w", err)
	}
	if err := w.crds.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		w.log.Warn("Watch of CustomResourceDefinitions failed; retrying", "err", err)
	}); err != nil {
		return nil, fmt.Errorf("set CRD watch error handler: %w", err)
	}
	if _, err := w.crds.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.reconcile() },
		UpdateFunc: func(any, any) { w.reconcile() },
		DeleteFunc: func(any) { w.reconcile() },
	}); err != nil {
		return nil, fmt.Errorf("add CRD handler: %w", err)
	}
	return w, nil
}

// Run watches until ctx is done, then stops every informer.
func (w *Watcher[R]) Run(ctx context.Context) {
	w.mu.Lock()
	w.ctx = ctx
	w.mu.Unlock()
	w.crds.RunWithContext(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	for key, kw := range w.kinds {
		kw.stop()
		delete(w.kinds, key)
	}
}
