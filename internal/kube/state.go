package kube

// What the caches hold, read by the collectors: kinds, records, sync and
// readiness, and lookups of single objects.

import (
	"slices"
	"sort"
)

// State returns every watched kind, sorted by kind then group, with the
// records of the synced ones. It reads only the local caches.
func (w *Watcher[R]) State() []KindState[R] {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := make([]KindState[R], 0, len(w.kinds))
	for _, kw := range w.kinds {
		s := KindState[R]{Kind: kw.kind, Synced: kw.synced(), Forbidden: kw.forbidden(),
			WatchErrors: kw.watchErrors.Load(), ObjectErrors: kw.objectErrors.Load()}
		// A half-filled cache would report objects as missing; until the
		// first full list has landed, report the kind and no objects.
		if s.Synced {
			for _, inf := range kw.informers {
				s.Records = appendRecords[R](s.Records, inf.GetStore().List())
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

// appendRecords appends the records of a store's listing. The store holds
// only what Transform returned, so every item is an R.
func appendRecords[R any](out []R, items []any) []R {
	for _, o := range items {
		out = append(out, o.(R))
	}
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
func (w *Watcher[R]) Ready() (bool, []string) {
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
func (w *Watcher[R]) Exists(kind, namespace, name string) (exists, watched bool) {
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
// cache holds it, and the zero R if it does not.
func (w *Watcher[R]) Get(kind, namespace, name string) (R, bool) {
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
				return obj.(R), true
			}
		}
	}
	var none R
	return none, false
}

// watches reports whether the namespace filters let the informers of a
// namespaced kind see objects in namespace.
func (w *Watcher[R]) watches(namespace string) bool {
	if slices.Contains(w.opts.ExcludeNamespaces, namespace) {
		return false
	}
	return len(w.opts.Namespaces) == 0 || slices.Contains(w.opts.Namespaces, namespace)
}
