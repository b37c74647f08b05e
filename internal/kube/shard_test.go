package kube

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// The vectors were computed with an independent transcription of the
// paper's algorithm (in Python, with 64-bit wrap-around): they pin the
// function, so a change that would move objects between shards, or away
// from where kube-state-metrics puts the same UID, fails here.
func TestJumpHashVectors(t *testing.T) {
	for _, v := range []struct {
		key     uint64
		buckets int32
		want    int32
	}{
		{0, 1, 0},
		{0, 10, 0},
		{1, 10, 6},
		{42, 2, 1},
		{0xdeadbeef, 3, 2},
		{0xdeadbeef, 100, 87},
		{math.MaxUint64, 7, 2},
		{123456789, 1000, 294},
		{5, 0, 0},
		{5, -3, 0},
	} {
		if got := JumpHash(v.key, v.buckets); got != v.want {
			t.Errorf("JumpHash(%d, %d) = %d, want %d", v.key, v.buckets, got, v.want)
		}
	}
	for _, v := range []struct {
		uid  types.UID
		fnv  uint64
		want []int // shard for 1, 2, 3, 4, 5 and 10 shards
	}{
		{"", 0xcbf29ce484222325, []int{0, 1, 1, 1, 1, 1}},
		{"a", 0xaf63dc4c8601ec8c, []int{0, 1, 2, 2, 2, 2}},
		{"3f6c1a4e-8a39-4f8e-9d1b-5b1f8e2c7d10", 0x8ae8ef201215031e, []int{0, 1, 2, 2, 2, 2}},
		{"00000000-0000-0000-0000-000000000000", 0x7c384c6218f299f1, []int{0, 1, 1, 1, 1, 1}},
	} {
		h := fnv.New64a()
		h.Write([]byte(v.uid))
		if h.Sum64() != v.fnv {
			t.Errorf("fnv64a(%q) = %#x, want %#x", v.uid, h.Sum64(), v.fnv)
		}
		var got []int
		for _, n := range []int{1, 2, 3, 4, 5, 10} {
			got = append(got, ShardOf(v.uid, n))
		}
		if !slices.Equal(got, v.want) {
			t.Errorf("ShardOf(%q, 1..5, 10) = %v, want %v", v.uid, got, v.want)
		}
	}
}

func randomUIDs(n int) []types.UID {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]types.UID, n)
	for i := range out {
		out[i] = types.UID(fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xfff, r.Uint32()&0xffff, r.Uint64()&0xffffffffffff))
	}
	return out
}

// Each shard gets its share, and growing the shards by one moves only the
// objects the new shard takes: what makes a StatefulSet scale-up cheap.
func TestJumpHashDistributionAndMovement(t *testing.T) {
	uids := randomUIDs(30000)
	for _, total := range []int{2, 3, 7} {
		counts := make([]int, total)
		for _, u := range uids {
			s := ShardOf(u, total)
			if s != ShardOf(u, total) {
				t.Fatalf("ShardOf(%q, %d) is not stable", u, total)
			}
			counts[s]++
		}
		share := float64(len(uids)) / float64(total)
		for s, n := range counts {
			if math.Abs(float64(n)-share) > 0.05*share {
				t.Errorf("%d shards: shard %d holds %d objects, want %0.f ± 5%%: %v", total, s, n, share, counts)
			}
		}
	}
	for total := 1; total < 8; total++ {
		moved := 0
		for _, u := range uids {
			before, after := ShardOf(u, total), ShardOf(u, total+1)
			if before != after {
				moved++
				if after != total {
					t.Fatalf("%q moved from shard %d to %d going from %d to %d shards; only moves to the new shard are allowed", u, before, after, total, total+1)
				}
			}
		}
		want := float64(len(uids)) / float64(total+1)
		if math.Abs(float64(moved)-want) > 0.06*want {
			t.Errorf("from %d to %d shards %d objects moved, want about %.0f", total, total+1, moved, want)
		}
	}
}

func TestShardingKeeps(t *testing.T) {
	uids := randomUIDs(300)
	for _, s := range []Sharding{{}, {Shard: 0, Total: 1}} {
		for _, u := range uids {
			if !s.Keeps(u) {
				t.Fatalf("%+v drops %q; unsharded keeps everything", s, u)
			}
		}
		if s.Enabled() {
			t.Errorf("%+v is enabled", s)
		}
	}
	// Every object on exactly one of three shards.
	for _, u := range uids {
		n := 0
		for shard := range 3 {
			if (Sharding{Shard: shard, Total: 3}).Keeps(u) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%q is kept by %d of 3 shards", u, n)
		}
	}
	// A StatefulSet pod being scaled away keeps nothing, even down to one.
	for _, s := range []Sharding{{Shard: 3, Total: 3}, {Shard: 2, Total: 1}, {Shard: -1, Total: 3}} {
		if !s.Enabled() || slices.ContainsFunc(uids, s.Keeps) {
			t.Errorf("%+v keeps objects or is not enabled", s)
		}
	}
}

func TestValidateSharding(t *testing.T) {
	for _, ok := range [][2]int{{0, 1}, {0, 3}, {2, 3}} {
		if err := ValidateSharding(ok[0], ok[1]); err != nil {
			t.Errorf("--shard=%d --total-shards=%d: %v", ok[0], ok[1], err)
		}
	}
	for _, bad := range []struct {
		shard, total int
		want         string
	}{
		{0, 0, "--total-shards=0"},
		{0, -2, "--total-shards=-2"},
		{3, 3, "--shard=3 is outside 0..2"},
		{-1, 3, "--shard=-1"},
		{1, 1, "--shard=1 is outside 0..0"},
	} {
		err := ValidateSharding(bad.shard, bad.total)
		if err == nil || !strings.Contains(err.Error(), bad.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--shard=%d --total-shards=%d: %v, want one line naming %q", bad.shard, bad.total, err, bad.want)
		}
	}
}

func TestPodOrdinal(t *testing.T) {
	for _, v := range []struct {
		pod, sts, label string
		want            int
		err             string
	}{
		{"flux-exporter-2", "flux-exporter", "", 2, ""},
		{"flux-exporter-2", "flux-exporter", "5", 5, ""}, // the label wins
		{"x-flux-exporter-0", "x-flux-exporter", "", 0, ""},
		{"other-1", "flux-exporter", "", 0, "does not start with flux-exporter-"},
		{"flux-exporter-abc", "flux-exporter", "", 0, `"abc" from its name`},
		{"flux-exporter-1", "flux-exporter", "-1", 0, "label " + PodIndexLabel},
	} {
		got, err := podOrdinal(v.pod, v.sts, v.label)
		switch {
		case v.err == "" && (err != nil || got != v.want):
			t.Errorf("podOrdinal(%q, %q, %q) = %d, %v; want %d", v.pod, v.sts, v.label, got, err, v.want)
		case v.err != "" && (err == nil || !strings.Contains(err.Error(), v.err)):
			t.Errorf("podOrdinal(%q, %q, %q) = %d, %v; want an error naming %q", v.pod, v.sts, v.label, got, err, v.err)
		}
	}
}

func obj(ns, name string, uid types.UID) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("source.toolkit.fluxcd.io/v1")
	u.SetKind("GitRepository")
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetUID(uid)
	return u
}

// uidOn finds a UID of the given shard of total.
func uidOn(t *testing.T, shard, total int, skip ...types.UID) types.UID {
	t.Helper()
	for _, u := range randomUIDs(100) {
		if ShardOf(u, total) == shard && !slices.Contains(skip, u) {
			return u
		}
	}
	t.Fatalf("no UID on shard %d of %d", shard, total)
	return ""
}

// The filter drops other shards' objects from lists and watches, passes
// bookmarks, and records its own deletions until the key is seen again.
func TestShardFilter(t *testing.T) {
	s := Sharding{Shard: 1, Total: 3}
	mine, theirs := uidOn(t, 1, 3), uidOn(t, 2, 3)
	dead := newTombstones(time.Hour)
	now := time.Unix(1000, 0)
	dead.now = func() time.Time { return now }
	f := shardFilter{sharding: s, dead: dead}

	list := &unstructured.UnstructuredList{Items: []unstructured.Unstructured{*obj("a", "mine", mine), *obj("a", "theirs", theirs)}}
	if err := f.keepList(list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].GetName() != "mine" {
		t.Fatalf("the list keeps %d items, want mine only", len(list.Items))
	}

	for _, e := range []struct {
		ev   watch.Event
		keep bool
	}{
		{watch.Event{Type: watch.Added, Object: obj("a", "mine", mine)}, true},
		{watch.Event{Type: watch.Modified, Object: obj("a", "theirs", theirs)}, false},
		{watch.Event{Type: watch.Bookmark, Object: obj("", "", "")}, true},
		{watch.Event{Type: watch.Deleted, Object: obj("a", "theirs", theirs)}, false},
	} {
		if _, keep := f.keepEvent(e.ev); keep != e.keep {
			t.Errorf("%s of %s: kept %v, want %v", e.ev.Type, e.ev.Object.(*unstructured.Unstructured).GetName(), keep, e.keep)
		}
	}
	if dead.has("a/theirs") {
		t.Error("another shard's deletion was recorded as ours")
	}
	if _, keep := f.keepEvent(watch.Event{Type: watch.Deleted, Object: obj("a", "mine", mine)}); !keep {
		t.Error("our own deletion was dropped")
	}
	if !dead.has("a/mine") {
		t.Error("our own deletion was not recorded")
	}
	// Re-created on another shard: no longer our deletion.
	f.keepEvent(watch.Event{Type: watch.Added, Object: obj("a", "mine", theirs)})
	if dead.has("a/mine") {
		t.Error("a key re-created on another shard still counts as our deletion")
	}
	f.keepEvent(watch.Event{Type: watch.Deleted, Object: obj("a", "gone", mine)})
	now = now.Add(time.Hour)
	if dead.has("a/gone") {
		t.Error("a deletion outlived the retention")
	}
	f.keepEvent(watch.Event{Type: watch.Deleted, Object: obj("a", "later", mine)})
	if _, ok := dead.at["a/gone"]; ok {
		t.Error("an expired deletion was not swept")
	}
}

func recordNames(s KindState[testRecord]) []string {
	var out []string
	for _, r := range s.Records {
		m := r
		out = append(out, m.GetNamespace()+"/"+m.GetName())
	}
	slices.Sort(out)
	return out
}

// Three sharded watchers hold every object exactly once between them; a
// reshard to one shard fills the cache without ever showing it half empty.
func TestWatcherShards(t *testing.T) {
	api := &fakeAPI{forbidden: map[string]bool{}, crds: []map[string]any{crd("source.toolkit.fluxcd.io", "GitRepository", "gitrepositories")},
		objects: map[string][]map[string]any{}}
	var all []string
	for i, uid := range randomUIDs(60) {
		o := object("source.toolkit.fluxcd.io", "GitRepository", "apps", fmt.Sprintf("repo-%02d", i))
		o["metadata"].(map[string]any)["uid"] = string(uid)
		api.objects["gitrepositories"] = append(api.objects["gitrepositories"], o)
		all = append(all, "apps/"+fmt.Sprintf("repo-%02d", i))
	}
	var union []string
	var watchers []*Watcher[testRecord]
	for shard := range 3 {
		w, _ := startWatcher(t, api, WatcherOptions[testRecord]{Sharding: Sharding{Shard: shard, Total: 3}, DeletedRetention: time.Hour})
		watchers = append(watchers, w)
		waitFor(t, 20*time.Second, func() error {
			if ok, pending := w.Ready(); !ok || len(w.State()) != 1 {
				return fmt.Errorf("shard %d not ready: %v", shard, pending)
			}
			return nil
		})
		names := recordNames(w.State()[0])
		if len(names) < 10 {
			t.Errorf("shard %d holds %d of 60 objects", shard, len(names))
		}
		for _, n := range names {
			if slices.Contains(union, n) {
				t.Errorf("%s is on two shards", n)
			}
			ns, name, _ := strings.Cut(n, "/")
			if exists, watched := w.Exists("GitRepository", ns, name); !exists || !watched {
				t.Errorf("shard %d: Exists(%s) = %v, %v for its own object", shard, n, exists, watched)
			}
		}
		union = append(union, names...)
	}
	slices.Sort(union)
	if !slices.Equal(union, all) {
		t.Fatalf("the shards hold %d objects between them, want all %d", len(union), len(all))
	}
	w := watchers[0]
	for _, n := range all {
		ns, name, _ := strings.Cut(n, "/")
		mine := slices.Contains(recordNames(w.State()[0]), n)
		if exists, watched := w.Exists("GitRepository", ns, name); !mine && (exists || watched) {
			t.Errorf("shard 0: Exists(%s) = %v, %v for another shard's object; want not watched", n, exists, watched)
		}
	}

	// Scrapes during the reshard must see the old shard whole or the new.
	before := len(recordNames(w.State()[0]))
	stop := make(chan struct{})
	bad := make(chan string, 1)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if s, ok := stateOf(w, "GitRepository"); !ok || !s.Synced || (len(s.Records) != before && len(s.Records) != len(all)) {
				select {
				case bad <- fmt.Sprintf("synced=%v with %d records", s.Synced, len(s.Records)):
				default:
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.Reshard(ctx, Sharding{Shard: 0, Total: 1}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	select {
	case b := <-bad:
		t.Errorf("a scrape during the reshard saw the kind %s", b)
	default:
	}
	if got := recordNames(w.State()[0]); !slices.Equal(got, all) || w.Sharding() != (Sharding{Shard: 0, Total: 1}) {
		t.Errorf("after resharding to one shard: %d objects, sharding %+v", len(got), w.Sharding())
	}
	if exists, watched := w.Exists("GitRepository", "apps", "no-such-repo"); exists || !watched {
		t.Errorf("unsharded, a missing object is %v, %v; want deleted (false, true)", exists, watched)
	}
}
