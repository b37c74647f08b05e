package kube

import (
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// Sharding says which Flux objects one replica keeps, as kube-state-metrics
// shards: an object belongs to shard JumpHash(fnv64a(uid), Total). The UID
// is the key because it never changes for the life of an object, so an
// object stays on one shard, and a deleted and re-created object (a new UID)
// may land on another, which is fine: it is a new object.
type Sharding struct {
	// Shard is this replica's ordinal, 0 ≤ Shard < Total. A StatefulSet pod
	// being scaled away can have Shard ≥ Total for a moment; it then keeps
	// nothing.
	Shard int
	// Total is the number of shards; 0 and 1 both mean unsharded.
	Total int
}

// Enabled reports whether this replica may lack some objects: the objects
// are split between replicas, or its ordinal is past the last shard.
func (s Sharding) Enabled() bool { return s.Total > 1 || s.Shard != 0 }

// Keeps reports whether the object with this UID belongs to the shard.
func (s Sharding) Keeps(uid types.UID) bool {
	total := max(s.Total, 1)
	switch {
	case s.Shard < 0 || s.Shard >= total:
		return false // a pod being scaled away; the others cover every shard
	case total == 1:
		return true
	}
	return ShardOf(uid, total) == s.Shard
}

// Normalized is s with Total at least 1, the form the metrics report.
func (s Sharding) Normalized() Sharding {
	if s.Total < 1 {
		s.Total = 1
	}
	return s
}

// ValidateSharding checks --shard and --total-shards.
func ValidateSharding(shard, total int) error {
	if total < 1 {
		return fmt.Errorf("--total-shards=%d: there must be at least one shard; give the number of exporter replicas, or 1 for none", total)
	}
	if shard < 0 || shard >= total {
		return fmt.Errorf("--shard=%d is outside 0..%d for --total-shards=%d; give each replica its own ordinal from 0 to --total-shards minus one", shard, total-1, total)
	}
	return nil
}

// ShardOf is the shard of the object with this UID among total shards,
// the same function kube-state-metrics uses, so the two place an object
// alike. total < 1 counts as 1.
func ShardOf(uid types.UID, total int) int {
	if total <= 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(uid)) // hash.Hash's Write never fails
	return int(JumpHash(h.Sum64(), int32(min(total, 1<<31-1))))
}

// JumpHash is the jump consistent hash of Lamping and Veach ("A Fast,
// Minimal Memory, Consistent Hash Algorithm", 2014): it maps key to a
// bucket in [0, buckets) such that growing buckets from n to n+1 moves only
// about 1/(n+1) of the keys, all of them to the new bucket. That is why a
// StatefulSet scaled from 3 to 4 replicas re-homes a quarter of the objects
// instead of nearly all, as key mod n would. buckets < 1 returns 0.
//
// The loop follows the paper's published algorithm: a linear congruential
// generator steps the key, and each step jumps to the next bucket the key
// would move to as buckets grow, until the jump passes buckets.
func JumpHash(key uint64, buckets int32) int32 {
	if buckets < 1 {
		return 0
	}
	b, j := int64(-1), int64(0)
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int32(b)
}

// uidOf reads the UID of an object from a list or watch; ok is false for
// objects that carry no metadata, such as a watch error's Status.
func uidOf(obj runtime.Object) (types.UID, string, bool) {
	m, ok := obj.(interface {
		GetUID() types.UID
		GetNamespace() string
		GetName() string
	})
	if !ok {
		return "", "", false
	}
	return m.GetUID(), keyOf(m.GetNamespace(), m.GetName()), true
}

// shardFilter keeps the objects of one shard out of an informer's list and
// watch, so that other shards' objects never reach the cache or the
// Transform; kube-state-metrics filters its ListWatch the same way. It also
// remembers which of its own objects it saw deleted, so that Exists can tell
// a deletion from an object that lives on another shard (see tombstones).
type shardFilter struct {
	sharding Sharding
	dead     *tombstones
}

// keepEvent passes bookmarks and errors untouched, and added, modified and
// deleted objects only when they belong to the shard.
func (f shardFilter) keepEvent(e watch.Event) (watch.Event, bool) {
	if e.Type != watch.Added && e.Type != watch.Modified && e.Type != watch.Deleted {
		return e, true
	}
	uid, key, ok := uidOf(e.Object)
	if !ok {
		return e, true
	}
	if !f.sharding.Keeps(uid) {
		// A key reused by another shard's object is not a deletion of ours.
		f.dead.forget(key)
		return e, false
	}
	if e.Type == watch.Deleted {
		f.dead.add(key)
	} else {
		f.dead.forget(key)
	}
	return e, true
}

// keepList drops other shards' objects from one page of a list.
func (f shardFilter) keepList(list runtime.Object) error {
	if ul, ok := list.(*unstructured.UnstructuredList); ok {
		kept := ul.Items[:0]
		for i := range ul.Items {
			u := &ul.Items[i]
			if f.sharding.Keeps(u.GetUID()) {
				kept = append(kept, *u)
			}
			f.dead.forget(keyOf(u.GetNamespace(), u.GetName()))
		}
		// Clear the tail so that the dropped objects can be collected.
		clear(ul.Items[len(kept):])
		ul.Items = kept
		return nil
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return fmt.Errorf("filter list for shard %d: %w", f.sharding.Shard, err)
	}
	kept := items[:0]
	for _, obj := range items {
		uid, key, ok := uidOf(obj)
		if !ok || f.sharding.Keeps(uid) {
			kept = append(kept, obj)
		}
		f.dead.forget(key)
	}
	if err := meta.SetList(list, kept); err != nil {
		return fmt.Errorf("filter list for shard %d: %w", f.sharding.Shard, err)
	}
	return nil
}

func keyOf(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// tombstones are the cache keys of a shard's own objects that a watch
// reported deleted, kept for a while. Without them a sharded cache could not
// tell its own deleted object from another shard's live one: both are simply
// absent. They are written in the reflector's goroutine, in the order of the
// watch, so a key re-created on another shard right after a deletion is
// forgotten after it was recorded, never before. A deletion the watch missed
// (one that happened while it was reconnecting) leaves no tombstone; Exists
// then reports the object as not watched, which costs only an earlier expiry
// of its event series.
type tombstones struct {
	mu        sync.Mutex
	retention time.Duration
	now       func() time.Time
	at        map[string]time.Time
}

func newTombstones(retention time.Duration) *tombstones {
	return &tombstones{retention: retention, now: time.Now, at: map[string]time.Time{}}
}

func (t *tombstones) add(key string) {
	if t == nil || t.retention <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	// Deletions are rare next to updates; sweeping here keeps the map to
	// the deletions of one retention period without a goroutine.
	for k, at := range t.at {
		if now.Sub(at) >= t.retention {
			delete(t.at, k)
		}
	}
	t.at[key] = now
}

func (t *tombstones) forget(key string) {
	if t == nil || t.retention <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.at, key)
}

// has reports whether key was deleted within the retention.
func (t *tombstones) has(key string) bool {
	if t == nil || t.retention <= 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.at[key]
	return ok && t.now().Sub(at) < t.retention
}
