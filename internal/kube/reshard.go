package kube

// Resharding: a new shard or shard count restarts the informers it affects.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sharding is what the caches keep now.
func (w *Watcher[R]) Sharding() Sharding {
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
func (w *Watcher[R]) Reshard(ctx context.Context, s Sharding) error {
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
	w.log.Info("Resharded the Flux object caches", "shard", s.Shard, "total_shards", s.Normalized().Total,
		"previous_shard", old.Shard, "previous_total_shards", old.Normalized().Total)
	return errors.Join(errs...)
}
