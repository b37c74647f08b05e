package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// DefaultAPIGroups are the API groups whose CRDs are watched unless
// --flux.api-groups says otherwise: the Flux toolkit, the source extensions
// (ArtifactGenerator) and the Flux Operator, whose group fluxcd.controlplane.io
// shares no suffix with the others. An explicit list rather than a suffix
// match, because the exporter can only read what its ClusterRole grants: the
// ClusterRoles of charts/flux-exporter and deploy/ grant exactly these
// groups, and main_test.go and sandbox/e2e/install_test.go fail when they
// differ.
var DefaultAPIGroups = []string{
	"source.toolkit.fluxcd.io",
	"kustomize.toolkit.fluxcd.io",
	"helm.toolkit.fluxcd.io",
	"notification.toolkit.fluxcd.io",
	"image.toolkit.fluxcd.io",
	"source.extensions.fluxcd.io",
	"fluxcd.controlplane.io",
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

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
type Transform func(k Kind, u *unstructured.Unstructured, prev metav1.ObjectMetaAccessor) (metav1.ObjectMetaAccessor, []error)

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
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
	Transform        Transform
	Logger           *slog.Logger
}

// KindState is what the collector reads about one kind on a scrape.
type KindState struct {
	Kind   Kind
	Synced bool
	// Forbidden is true while the API server answers 403 to a list or
	// watch of the kind (in any watched namespace): it cannot sync until
	// RBAC grants it, so readiness does not wait for it.
	Forbidden    bool
	Records      []any
	WatchErrors  uint64
	ObjectErrors uint64
}

// Watcher discovers Flux kinds from CRDs and keeps one informer cache per
// kind (per namespace when --namespaces is given). Kinds come and go with
// their CRDs, without a restart.
type Watcher struct {
	client dynamic.Interface
	opts   WatcherOptions
	log    *slog.Logger
	groups map[string]bool // opts.APIGroups

	crds cache.SharedIndexInformer

	mu       sync.RWMutex
	ctx      context.Context
	kinds    map[string]*kindWatch // by group/kind
	sharding Sharding              // what the informers of w.kinds keep
	// reshardMu makes one Reshard wait for the one before it.
	reshardMu sync.Mutex
	// version counts the changes to what State returns (Version).
	version atomic.Uint64
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

// crdRecord is the compact form of a CRD: only what decides whether and how
// a Flux kind is watched.
type crdRecord struct {
	name, group, kind, resource string
	namespaced, established     bool
	version, fluxVersion        string
}

func (r *crdRecord) GetObjectMeta() metav1.Object { return &metav1.ObjectMeta{Name: r.name} }

// NewWatcher builds a Watcher on its own client; Run starts it.
func NewWatcher(cfg *rest.Config, opts WatcherOptions) (*Watcher, error) {
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
	w := &Watcher{opts: opts, log: opts.Logger, kinds: map[string]*kindWatch{}, groups: map[string]bool{}, sharding: opts.Sharding}
	for _, g := range opts.APIGroups {
		w.groups[g] = true
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &failureCounter{next: rt, w: w} })
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
func (w *Watcher) Run(ctx context.Context) {
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

// ValidateNamespaces rejects a namespace that is both watched and excluded.
func ValidateNamespaces(include, exclude []string) error {
	for _, ns := range include {
		if slices.Contains(exclude, ns) {
			return fmt.Errorf("namespace %q is both in --namespaces and --namespaces-exclude; drop it from one of them", ns)
		}
	}
	return nil
}

// ParseAPIGroups reads --flux.api-groups: comma-separated API groups,
// without duplicates. Unlike the namespace lists, an empty entry is an
// error: "a,,b" or a trailing comma is more likely a typo than a wish, and
// an empty list would watch nothing.
func ParseAPIGroups(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("--flux.api-groups is empty, so no Flux kind would be watched; give comma-separated API groups, e.g. %s", strings.Join(DefaultAPIGroups[:2], ","))
	}
	var out []string
	for i, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			return nil, fmt.Errorf("--flux.api-groups=%q: entry %d is empty; give comma-separated API groups, e.g. %s", s, i+1, strings.Join(DefaultAPIGroups[:2], ","))
		}
		out = append(out, g)
	}
	out = dedupe(out)
	if err := ValidateAPIGroups(out); err != nil {
		return nil, err
	}
	return out, nil
}

// ValidateAPIGroups rejects a group that no CRD can have: a CRD's
// spec.group must be a lowercase DNS subdomain with at least one dot.
func ValidateAPIGroups(groups []string) error {
	for _, g := range groups {
		errs := validation.IsDNS1123Subdomain(g)
		if !strings.Contains(g, ".") {
			errs = append(errs, "a CRD's group has at least one dot")
		}
		if len(errs) > 0 {
			return fmt.Errorf("--flux.api-groups: %q is not an API group (%s); use the CRDs' spec.group, e.g. %s", g, strings.Join(errs, "; "), DefaultAPIGroups[0])
		}
	}
	return nil
}

// dedupe drops repeated entries, keeping the first of each.
func dedupe(list []string) []string {
	var out []string
	for _, s := range list {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func (w *Watcher) transformCRD(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil // already compact (the transform may see its own output)
	}
	r := &crdRecord{name: u.GetName(), fluxVersion: u.GetLabels()["app.kubernetes.io/version"]}
	r.group, _, _ = unstructured.NestedString(u.Object, "spec", "group")
	if !w.groups[r.group] {
		return r, nil
	}
	r.kind, _, _ = unstructured.NestedString(u.Object, "spec", "names", "kind")
	r.resource, _, _ = unstructured.NestedString(u.Object, "spec", "names", "plural")
	scope, _, _ := unstructured.NestedString(u.Object, "spec", "scope")
	r.namespaced = scope == "Namespaced"
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
			r.established = true
		}
	}
	r.version = preferredVersion(u)
	return r, nil
}

// preferredVersion is the served version kubectl reads: the highest by
// Kubernetes version priority (v2 > v1 > v1beta3 > v1alpha1).
func preferredVersion(u *unstructured.Unstructured) string {
	versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
	var served []string
	for _, v := range versions {
		m, ok := v.(map[string]any)
		if !ok || m["served"] != true {
			continue
		}
		if name, ok := m["name"].(string); ok {
			served = append(served, name)
		}
	}
	if len(served) == 0 {
		return ""
	}
	sort.Slice(served, func(i, j int) bool {
		return version.CompareKubeAwareVersionStrings(served[i], served[j]) > 0
	})
	return served[0]
}

// reconcile makes the running informers match the Established CRDs of the
// watched groups. It runs on every CRD event; CRDs are few, so a full diff
// is cheap.
func (w *Watcher) reconcile() {
	want := map[string]Kind{}
	for _, obj := range w.crds.GetStore().List() {
		r, ok := obj.(*crdRecord)
		if !ok || !r.established || r.version == "" || !w.groups[r.group] {
			continue
		}
		want[r.group+"/"+r.kind] = Kind{Group: r.group, Version: r.version, Kind: r.kind,
			Resource: r.resource, Namespaced: r.namespaced, FluxVersion: r.fluxVersion}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil {
		return
	}
	for key, kw := range w.kinds {
		if k, ok := want[key]; ok && k == kw.kind {
			continue
		}
		kw.stop()
		delete(w.kinds, key)
		w.log.Info("Stopped watching Flux kind", "kind", kw.kind.Kind, "group", kw.kind.Group, "version", kw.kind.Version)
	}
	for key, k := range want {
		if _, ok := w.kinds[key]; ok {
			continue
		}
		kw, err := w.start(k, w.sharding)
		if err != nil {
			w.log.Error("Cannot watch Flux kind", "kind", k.Kind, "group", k.Group, "err", err)
			continue
		}
		w.kinds[key] = kw
		w.log.Info("Watching Flux kind", "kind", k.Kind, "group", k.Group, "version", k.Version)
	}
	w.version.Add(1) // kinds may have come or gone
}

// start runs the informers of one kind, keeping the objects of sharding.
// The caller holds w.mu.
func (w *Watcher) start(k Kind, sharding Sharding) (*kindWatch, error) {
	ctx, cancel := context.WithCancel(w.ctx)
	kw := &kindWatch{kind: k, stop: cancel, sharding: sharding}
	var filter *shardFilter
	if sharding.Enabled() {
		kw.dead = newTombstones(w.opts.DeletedRetention)
		filter = &shardFilter{sharding: sharding, dead: kw.dead}
	}
	gvr := schema.GroupVersionResource{Group: k.Group, Version: k.Version, Resource: k.Resource}
	namespaces := []string{metav1.NamespaceAll}
	if k.Namespaced && len(w.opts.Namespaces) > 0 {
		namespaces = w.opts.Namespaces
	}
	var tweak func(*metav1.ListOptions)
	if k.Namespaced && len(w.opts.Namespaces) == 0 && len(w.opts.ExcludeNamespaces) > 0 {
		sel := make([]fields.Selector, 0, len(w.opts.ExcludeNamespaces))
		for _, ns := range w.opts.ExcludeNamespaces {
			sel = append(sel, fields.OneTermNotEqualSelector("metadata.namespace", ns))
		}
		selector := fields.AndSelectors(sel...).String()
		tweak = func(o *metav1.ListOptions) { o.FieldSelector = selector }
	}
	// transform reads the previous record from the store of the informer
	// the object came through: the one the cache serves now.
	transform := func(store cache.Store) cache.TransformFunc {
		return func(obj any) (any, error) {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok {
				return obj, nil
			}
			return w.transformObject(kw, store, u), nil
		}
	}
	for _, ns := range namespaces {
		inf := cache.NewSharedIndexInformerWithOptions(w.listWatch(gvr, ns, tweak, filter), &unstructured.Unstructured{},
			cache.SharedIndexInformerOptions{ObjectDescription: gvr.String()})
		if err := inf.SetTransform(transform(inf.GetStore())); err != nil {
			cancel()
			return nil, fmt.Errorf("set transform: %w", err)
		}
		// Failures are counted by failureCounter, which also sees the ones
		// client-go retries without calling this handler.
		if err := inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
			if apierrors.IsForbidden(err) {
				return // failureCounter said so once, with what to grant; not on every retry
			}
			w.log.Warn("Watch failed; serving the cached objects while retrying", "kind", k.Kind, "group", k.Group, "namespace", ns, "err", err)
		}); err != nil {
			cancel()
			return nil, fmt.Errorf("set watch error handler: %w", err)
		}
		// Every event counts as a change of State, delivered once the
		// store holds it.
		bump := func(any) { w.version.Add(1) }
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: bump, UpdateFunc: func(_, obj any) { bump(obj) }, DeleteFunc: bump,
		}); err != nil {
			cancel()
			return nil, fmt.Errorf("add event handler: %w", err)
		}
		kw.informers = append(kw.informers, inf)
		kw.scopes = append(kw.scopes, &scope{namespace: ns})
	}
	// Start only once every scope exists: failureCounter looks them up
	// from the first request on.
	for _, inf := range kw.informers {
		go inf.RunWithContext(ctx)
	}
	return kw, nil
}

// transformObject turns u into its record, handing the transform the
// record the store holds for the same key, and counts and logs the fields
// it could not read.
func (w *Watcher) transformObject(kw *kindWatch, store cache.Store, u *unstructured.Unstructured) any {
	k := kw.kind
	var prev metav1.ObjectMetaAccessor
	// The store keys u as it keys the record it holds.
	if old, ok, _ := store.Get(u); ok {
		prev, _ = old.(metav1.ObjectMetaAccessor)
	}
	rec, errs := w.opts.Transform(k, u, prev)
	if len(errs) > 0 {
		kw.objectErrors.Add(uint64(len(errs)))
		w.log.Debug("Object has fields that cannot be read; reporting the rest", "kind", k.Kind, "group", k.Group,
			"namespace", u.GetNamespace(), "name", u.GetName(), "errors", errors.Join(errs...))
	}
	return rec
}

// listWatch lists and watches one resource in ns ("" for all) through the
// dynamic client, as dynamicinformer does, and, when sharded, drops the
// objects of other shards from every list page and watch event before the
// reflector sees them: they never enter the cache, and the memory of a
// replica follows its share of the objects.
func (w *Watcher) listWatch(gvr schema.GroupVersionResource, ns string, tweak func(*metav1.ListOptions), filter *shardFilter) cache.ListerWatcher {
	res := w.client.Resource(gvr).Namespace(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			if tweak != nil {
				tweak(&o)
			}
			list, err := res.List(ctx, o)
			if err != nil || filter == nil {
				return list, err
			}
			if err := filter.keepList(list); err != nil {
				return nil, err
			}
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			if tweak != nil {
				tweak(&o)
			}
			wi, err := res.Watch(ctx, o)
			if err != nil || filter == nil {
				return wi, err
			}
			return watch.Filter(wi, filter.keepEvent), nil
		},
	}
	// Streaming lists (WatchListClient) send the initial objects as watch
	// events, which the filter sees like any other.
	return cache.ToListWatcherWithWatchListSemantics(lw, w.client)
}

// State returns every watched kind, sorted by kind then group, with the
// records of the synced ones. It reads only the local caches.
func (w *Watcher) State() []KindState {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := make([]KindState, 0, len(w.kinds))
	for _, kw := range w.kinds {
		s := KindState{Kind: kw.kind, Synced: kw.synced(), Forbidden: kw.forbidden(),
			WatchErrors: kw.watchErrors.Load(), ObjectErrors: kw.objectErrors.Load()}
		// A half-filled cache would report objects as missing; until the
		// first full list has landed, report the kind and no objects.
		if s.Synced {
			for _, inf := range kw.informers {
				s.Records = append(s.Records, inf.GetStore().List()...)
			}
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind.Kind != out[j].Kind.Kind {
			return out[i].Kind.Kind < out[j].Kind.Kind
		}
		return out[i].Kind.Group < out[j].Kind.Group
	})
	return out
}

func (kw *kindWatch) synced() bool {
	for _, inf := range kw.informers {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

func (kw *kindWatch) forbidden() bool {
	for _, sc := range kw.scopes {
		if sc.forbidden.Load() {
			return true
		}
	}
	return false
}

// pending reports whether an informer of the kind is still expected to
// sync: a Forbidden one never will until RBAC changes, so waiting for it
// would hold /-/ready at 503 for good.
func (kw *kindWatch) pending() bool {
	for i, inf := range kw.informers {
		if !inf.HasSynced() && !kw.scopes[i].forbidden.Load() {
			return true
		}
	}
	return false
}

// Ready reports whether the CRD cache and every kind's cache have synced,
// and otherwise which are still syncing, as Kind.group. Kinds the API
// server forbids are left out: they stay unsynced in the metrics
// (flux_exporter_kind_synced 0, flux_exporter_kind_forbidden 1) instead.
func (w *Watcher) Ready() (bool, []string) {
	if !w.crds.HasSynced() {
		return false, []string{"CustomResourceDefinition"}
	}
	w.mu.RLock()
	var pending []string
	for _, kw := range w.kinds {
		if kw.pending() {
			pending = append(pending, kw.kind.Kind+"."+kw.kind.Group)
		}
	}
	w.mu.RUnlock()
	sort.Strings(pending)
	return len(pending) == 0, pending
}

// Exists tells state kept elsewhere, such as event series, what the cache
// knows of an object. watched is false when the cache cannot know: no
// Established Flux CRD has this kind, or the kind is namespaced and the
// namespace is outside --namespaces or in --namespaces-exclude. Such an
// object may well exist, and the caller needs a clock of its own for it.
// When watched, exists reports whether the cache holds the object; it is
// also true while the kind's cache has not synced, because only a full
// cache's positive knowledge of a deletion may expire that state.
//
// When sharded, an object the cache does not hold may live on another
// shard, which a name cannot tell (the shard follows the UID): it is
// reported as not watched, unless the shard's own watch saw it deleted
// within WatcherOptions.DeletedRetention, when it is watched and absent as
// unsharded.
func (w *Watcher) Exists(kind, namespace, name string) (exists, watched bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, kw := range w.kinds {
		if kw.kind.Kind != kind {
			continue
		}
		key := name
		if kw.kind.Namespaced {
			// start applies the namespace filters to namespaced kinds only.
			if !w.watches(namespace) {
				continue
			}
			key = namespace + "/" + name
		}
		if !kw.synced() {
			return true, true
		}
		for _, inf := range kw.informers {
			if _, ok, _ := inf.GetStore().GetByKey(key); ok {
				return true, true
			}
		}
		if !kw.sharding.Enabled() || kw.dead.has(key) {
			watched = true
		}
	}
	return false, watched
}

// Get returns what the Transform made of a cached object of kind, if the
// cache holds it.
func (w *Watcher) Get(kind, namespace, name string) (any, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, kw := range w.kinds {
		if kw.kind.Kind != kind {
			continue
		}
		key := name
		if kw.kind.Namespaced {
			key = namespace + "/" + name
		}
		for _, inf := range kw.informers {
			if obj, ok, _ := inf.GetStore().GetByKey(key); ok {
				return obj, true
			}
		}
	}
	return nil, false
}

// Version counts the changes to what State returns: every add, update and
// delete an informer delivers (after its store holds it), kinds starting
// and stopping, and reshards. State read after Version holds at least the
// changes counted, so a caller may cache what it derives from State under
// the number and reuse it while Version has not moved. Whether a kind has
// synced is not counted; read it from State.
func (w *Watcher) Version() uint64 { return w.version.Load() }

// Sharding is what the caches keep now.
func (w *Watcher) Sharding() Sharding {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.sharding
}

// Reshard makes the caches keep the objects of s instead. Every kind's
// informers are started anew with s while the old ones go on serving; each
// kind is switched once all the new informers have synced, or when ctx ends
// (the old ones are then stopped and the new ones serve unsynced). So a
// scrape during a reshard sees the old shard whole, never a half-filled
// cache, and objects that stay on this shard (with the jump hash, most of
// them when Total grows by one) keep their series without a gap.
func (w *Watcher) Reshard(ctx context.Context, s Sharding) error {
	w.reshardMu.Lock()
	defer w.reshardMu.Unlock()
	w.mu.Lock()
	if w.ctx == nil || w.ctx.Err() != nil {
		w.sharding = s // not running: the informers start with s
		w.mu.Unlock()
		return nil
	}
	if w.sharding == s {
		w.mu.Unlock()
		return nil
	}
	old := w.sharding
	next := map[string]*kindWatch{}
	prev := map[string]*kindWatch{}
	var errs []error
	for key, kw := range w.kinds {
		nkw, err := w.start(kw.kind, s)
		if err != nil {
			errs = append(errs, fmt.Errorf("restart %s.%s for shard %d of %d: %w", kw.kind.Kind, kw.kind.Group, s.Shard, s.Total, err))
			continue
		}
		next[key], prev[key] = nkw, kw
	}
	w.mu.Unlock()

	// Wait outside the lock: scrapes read the old caches meanwhile. A
	// forbidden kind never syncs; failureCounter marks the old informers'
	// scopes, which share the new ones' request paths.
	for key, nkw := range next {
		for ctx.Err() == nil && nkw.pending() && !prev[key].forbidden() {
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	w.sharding = s
	for key, nkw := range next {
		kw, ok := w.kinds[key]
		if !ok || kw.kind != nkw.kind {
			// The CRD changed while the new informers synced; reconcile
			// has already acted on it.
			nkw.stop()
			continue
		}
		kw.stop()
		// What failureCounter learnt, it learnt from both.
		for i, sc := range kw.scopes {
			nkw.scopes[i].failing.Store(sc.failing.Load())
			nkw.scopes[i].forbidden.Store(sc.forbidden.Load())
		}
		nkw.watchErrors.Store(kw.watchErrors.Load())
		nkw.objectErrors.Add(kw.objectErrors.Load())
		w.kinds[key] = nkw
	}
	// Kinds whose CRD appeared during the wait were started with the old
	// sharding.
	for key, kw := range w.kinds {
		if kw.sharding == s {
			continue
		}
		kw.stop()
		delete(w.kinds, key)
		nkw, err := w.start(kw.kind, s)
		if err != nil {
			errs = append(errs, fmt.Errorf("restart %s.%s for shard %d of %d: %w", kw.kind.Kind, kw.kind.Group, s.Shard, s.Total, err))
			continue
		}
		w.kinds[key] = nkw
	}
	w.version.Add(1) // the swapped caches hold other objects, with no event of their own
	w.log.Info("Resharded the Flux object caches", "shard", s.Shard, "total_shards", s.Normalized().Total,
		"previous_shard", old.Shard, "previous_total_shards", old.Normalized().Total)
	return errors.Join(errs...)
}

// watches reports whether the namespace filters let the informers of a
// namespaced kind see objects in namespace.
func (w *Watcher) watches(namespace string) bool {
	if slices.Contains(w.opts.ExcludeNamespaces, namespace) {
		return false
	}
	return len(w.opts.Namespaces) == 0 || slices.Contains(w.opts.Namespaces, namespace)
}

// FluxVersion is the distribution version read from the Flux CRDs' labels,
// or "" when none carries it.
func (w *Watcher) FluxVersion() string {
	// Read the kinds, not State(): that copies every cached record, and
	// the controllers collector asks on every scrape.
	w.mu.RLock()
	defer w.mu.RUnlock()
	var first *Kind
	for _, kw := range w.kinds {
		k := kw.kind
		// Only Flux's own CRDs carry the distribution version; the Flux
		// Operator's carry the operator's.
		if k.FluxVersion == "" || !strings.HasSuffix(k.Group, ".toolkit.fluxcd.io") {
			continue
		}
		// The same choice as the first labelled kind in State's order.
		if first == nil || k.Kind < first.Kind || (k.Kind == first.Kind && k.Group < first.Group) {
			first = &k
		}
	}
	if first == nil {
		return ""
	}
	return first.FluxVersion
}

// failureCounter counts every failed list or watch request against its kind.
// client-go retries refused connections and 429s inside the reflector
// without calling the watch error handler, so an API server outage would
// otherwise show no errors at all; the transport sees every attempt.
type failureCounter struct {
	next http.RoundTripper
	w    *Watcher
}

func (f *failureCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(req)
	// 410 Gone is the normal end of an expired watch, not a failure.
	failed := err != nil || (resp.StatusCode >= 400 && resp.StatusCode != http.StatusGone)
	kw, sc := f.w.scopeOfPath(req.URL.Path)
	if kw == nil {
		return resp, err
	}
	if failed {
		kw.watchErrors.Add(1)
	}
	if sc == nil {
		return resp, err
	}
	k := kw.kind
	attrs := []any{"kind", k.Kind, "group", k.Group}
	if sc.namespace != "" {
		attrs = append(attrs, "namespace", sc.namespace)
	}
	switch {
	case failed && err == nil && resp.StatusCode == http.StatusForbidden:
		// RBAC, not an outage: retries cannot fix it, so say once what
		// would, and stop readiness waiting for this informer.
		sc.failing.Store(true)
		if !sc.forbidden.Swap(true) {
			f.w.log.Error("Forbidden to list and watch a Flux kind; it reports no objects and /-/ready does not wait for it",
				append(attrs, "fix", fmt.Sprintf("grant get, list, watch on %s/%s to the exporter's ServiceAccount, or drop %s from --flux.api-groups", k.Group, k.Resource, k.Group))...)
		}
	case failed && !sc.failing.Swap(true):
		reason := fmt.Sprint(err)
		if err == nil {
			reason = resp.Status
		}
		f.w.log.Warn("Requests for a Flux kind are failing; serving the cached objects while client-go retries",
			append(attrs, "err", reason)...)
	case !failed:
		sc.forbidden.Store(false)
		if sc.failing.Swap(false) {
			f.w.log.Info("Requests for a Flux kind succeed again", attrs...)
		}
	}
	return resp, err
}

// scopeOfPath maps /apis/<group>/<version>[/namespaces/<ns>]/<resource> to
// its watched kind and to the informer's scope that made the request, or
// nil when no informer of the kind watches that namespace.
func (w *Watcher) scopeOfPath(path string) (*kindWatch, *scope) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) < 4 || parts[0] != "apis" {
		return nil, nil
	}
	group, rest, ns := parts[1], parts[3:], ""
	if rest[0] == "namespaces" && len(rest) >= 3 {
		ns, rest = rest[1], rest[2:]
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, kw := range w.kinds {
		if kw.kind.Group != group || kw.kind.Resource != rest[0] {
			continue
		}
		for _, sc := range kw.scopes {
			if sc.namespace == ns {
				return kw, sc
			}
		}
		return kw, nil
	}
	return nil, nil
}
