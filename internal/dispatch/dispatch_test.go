package dispatch

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

func ev(uid, ns, alert string, count int32, last int64) *corev1.Event {
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{UID: types.UID(uid), Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Alert", Namespace: ns, Name: alert, UID: types.UID("uid-" + alert)},
		Reason:         Reason, Count: count, LastTimestamp: metav1.NewTime(time.Unix(last, 0)),
	}
}

// step is one informer delivery: add (initial or not), update or delete.
type step struct {
	op      string // "initial", "add", "update", "delete"
	event   *corev1.Event
	deleted []string // Alerts gone from the cache after this step
}

// TestCounts replays informer deliveries and checks the series: the
// first list is the baseline, later growth of an Event's count is added,
// a shrinking or repeated count adds nothing, excluded namespaces are
// skipped, and a deleted Alert's series go.
func TestCounts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
		want  string
	}{
		{"the first list is the baseline", []step{
			{op: "initial", event: ev("a", "apps", "pager", 7, 100)},
		}, `
flux_notification_dispatch_failures_total{exported_namespace="apps",kind="Alert",name="pager",provider="slack"} 0
flux_notification_last_dispatch_failure_timestamp_seconds{exported_namespace="apps",kind="Alert",name="pager",provider="slack"} 100
`},
		{"growth after the first list is counted", []step{
			{op: "initial", event: ev("a", "apps", "pager", 7, 100)},
			{op: "update", event: ev("a", "apps", "pager", 9, 160)},
			{op: "add", event: ev("b", "apps", "pager", 1, 200)},
			{op: "update", event: ev("b", "apps", "pager", 1, 200)}, // a resync
		}, `
flux_notification_dispatch_failures_total{exported_namespace="apps",kind="Alert",name="pager",provider="slack"} 3
flux_notification_last_dispatch_failure_timestamp_seconds{exported_namespace="apps",kind="Alert",name="pager",provider="slack"} 200
`},
		{"an expired Event keeps its failures counted", []step{
			{op: "add", event: ev("a", "apps", "pager", 2, 100)},
			{op: "delete", event: ev("a", "apps", "pager", 2, 100)},
			{op: "add", event: ev("c", "apps", "pager", 0, 300)}, // count unset: one
		}, `
flux_notification_dispatch_failures_total{exported_namespace="apps",kind="Alert",name="pager",provider="slack"} 3
flux_notification_last_dispatch_failure_timestamp_seconds{exported_namespace="apps",kind="Alert",name="pager",provider="slack"} 300
`},
		{"excluded namespaces, other shards' and deleted Alerts leave no series", []step{
			{op: "add", event: ev("a", "kube-system", "pager", 2, 100)},
			{op: "add", event: ev("s", "apps", "elsewhere", 2, 100)},
			{op: "add", event: ev("b", "apps", "gone", 2, 100), deleted: []string{"apps/gone"}},
		}, ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gone := map[string]bool{}
			w := &Watcher{
				cfg: Config{
					Watches:  func(ns string) bool { return ns != "kube-system" },
					Provider: func(string, string) string { return "slack" },
					Keeps:    func(uid types.UID) bool { return uid != "uid-elsewhere" },
					Exists: func(_, ns, name string) (bool, bool) {
						return !gone[ns+"/"+name], true
					},
				},
				seen: map[types.UID]int32{}, total: map[key]float64{}, last: map[key]time.Time{},
			}
			for _, s := range tc.steps {
				f, _ := toFailure(s.event)
				switch s.op {
				case "initial":
					w.observe(f, true)
				case "add", "update":
					w.observe(f, false)
				case "delete":
					w.forget(cache.DeletedFinalStateUnknown{Obj: f})
				}
				for _, d := range s.deleted {
					gone[d] = true
				}
			}
			if got := samples(t, w); got != strings.TrimSpace(tc.want) {
				t.Errorf("series:\n%s\nwant:\n%s", got, strings.TrimSpace(tc.want))
			}
		})
	}
}

// samples is the collector's exposition without HELP and TYPE lines.
func samples(t *testing.T, w *Watcher) string {
	t.Helper()
	b, err := testutil.CollectAndFormat(w, expfmt.TypeTextPlain, "flux_notification_dispatch_failures_total", "flux_notification_last_dispatch_failure_timestamp_seconds")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
