package kube

// One informer per watched kind and scope: list and watch, sharded, with
// the transform that turns each object into its record.

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// start runs the informers of one kind, keeping the objects of sharding.
// The caller holds w.mu.
func (w *Watcher[R]) start(k Kind, sharding Sharding) (*kindWatch, error) {
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
func (w *Watcher[R]) transformObject(kw *kindWatch, store cache.Store, u *unstructured.Unstructured) any {
	k := kw.kind
	var prev R // the zero R for a new object
	// The store keys u as it keys the record it holds.
	if old, ok, _ := store.Get(u); ok {
		prev = old.(R)
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
func (w *Watcher[R]) listWatch(gvr schema.GroupVersionResource, ns string, tweak func(*metav1.ListOptions), filter *shardFilter) cache.ListerWatcher {
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
