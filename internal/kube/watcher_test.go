package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
)

func TestParseAPIGroups(t *testing.T) {
	got, err := ParseAPIGroups(strings.Join(DefaultAPIGroups, ","))
	if err != nil || !slices.Equal(got, DefaultAPIGroups) {
		t.Fatalf("the default parses to %v, %v; want itself", got, err)
	}
	got, err = ParseAPIGroups(" fluxcd.controlplane.io, example.com ,fluxcd.controlplane.io")
	if err != nil || !slices.Equal(got, []string{"fluxcd.controlplane.io", "example.com"}) {
		t.Errorf("spaces and a duplicate: got %v, %v", got, err)
	}
	for _, bad := range []struct{ in, want string }{
		{"", "is empty"},
		{"  ", "is empty"},
		{"a.io,,b.io", "entry 2 is empty"},
		{"a.io,", "entry 2 is empty"},
		{"source", `"source" is not an API group`},
		{"Source.Toolkit.fluxcd.io", "lowercase"},
		{"a_b.io", `"a_b.io"`},
		{"-a.io", `"-a.io"`},
	} {
		_, err := ParseAPIGroups(bad.in)
		if err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "--flux.api-groups") {
			t.Errorf("ParseAPIGroups(%q) = %v, want an error naming the flag and %q", bad.in, err, bad.want)
		}
	}
}

// fakeAPI is just enough of an API server for the watcher's informers:
// LIST, and WATCH with or without initial events, of CRDs and of custom
// resources, and 403 for the groups it is told to forbid.
type fakeAPI struct {
	mu        sync.Mutex
	crds      []map[string]any
	objects   map[string][]map[string]any // by resource
	forbidden map[string]bool             // by group
}

func (f *fakeAPI) forbid(group string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forbidden[group] = on
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 4 || parts[0] != "apis" {
		http.NotFound(w, r)
		return
	}
	group, version, rest, ns := parts[1], parts[2], parts[3:], ""
	if rest[0] == "namespaces" && len(rest) >= 3 {
		ns, rest = rest[1], rest[2:]
	}
	f.mu.Lock()
	forbidden := f.forbidden[group]
	var items []map[string]any
	if group == "apiextensions.k8s.io" {
		items = f.crds
	}
	for _, o := range f.objects[rest[0]] {
		if ns == "" || o["metadata"].(map[string]any)["namespace"] == ns {
			items = append(items, o)
		}
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if forbidden {
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
			"message": fmt.Sprintf("%s.%s is forbidden: User \"test\" cannot list resource %q in API group %q", rest[0], group, rest[0], group)})
		return
	}
	if r.URL.Query().Get("watch") != "true" && r.URL.Query().Get("watch") != "1" {
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": group + "/" + version, "kind": "List", "metadata": map[string]any{"resourceVersion": "1"}, "items": items})
		return
	}
	enc := json.NewEncoder(w)
	if r.URL.Query().Get("sendInitialEvents") == "true" {
		for _, it := range items {
			_ = enc.Encode(map[string]any{"type": "ADDED", "object": it})
		}
		_ = enc.Encode(map[string]any{"type": "BOOKMARK", "object": map[string]any{"apiVersion": group + "/" + version, "kind": "Bookmark",
			"metadata": map[string]any{"resourceVersion": "1", "annotations": map[string]any{metav1.InitialEventsAnnotationKey: "true"}}}})
	}
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

func crd(group, kind, plural string) map[string]any {
	return map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": plural + "." + group, "resourceVersion": "1"},
		"spec": map[string]any{"group": group, "scope": "Namespaced",
			"names":    map[string]any{"kind": kind, "plural": plural},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true}}},
		"status": map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": "True"}}},
	}
}

func object(group, kind, ns, name string) map[string]any {
	return map[string]any{"apiVersion": group + "/v1", "kind": kind,
		"metadata": map[string]any{"namespace": ns, "name": name, "resourceVersion": "1"}}
}

// lockedBuffer collects the watcher's JSON log lines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines are the logged lines whose message starts with prefix.
func (b *lockedBuffer) lines(prefix string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		var rec struct{ Msg string }
		if json.Unmarshal([]byte(l), &rec) == nil && strings.HasPrefix(rec.Msg, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// testRecord is what the tests' Transform keeps of an object: its name.
type testRecord = *metav1.ObjectMeta

// startWatcher runs a Watcher against the fake until the test ends.
func startWatcher(t *testing.T, api *fakeAPI, opts WatcherOptions[testRecord]) (*Watcher[testRecord], *lockedBuffer) {
	t.Helper()
	srv := httptest.NewServer(api)
	logs := &lockedBuffer{}
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Transform = func(_ Kind, u *unstructured.Unstructured, _ testRecord) (testRecord, []error) {
		return &metav1.ObjectMeta{Namespace: u.GetNamespace(), Name: u.GetName()}, nil
	}
	w, err := NewWatcher(&rest.Config{Host: srv.URL}, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.CloseClientConnections()
		srv.Close()
	})
	return w, logs
}

// waitFor polls cond every 50ms for up to limit.
func waitFor(t *testing.T, limit time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stateOf(w *Watcher[testRecord], kind string) (KindState[testRecord], bool) {
	for _, s := range w.State() {
		if s.Kind.Kind == kind {
			return s, true
		}
	}
	return KindState[testRecord]{}, false
}

// The Flux Operator's group does not end in .fluxcd.io, and a group that
// does is not watched unless listed: the list, not a suffix, decides.
func TestDiscoveryFollowsTheAPIGroups(t *testing.T) {
	api := &fakeAPI{forbidden: map[string]bool{}, crds: []map[string]any{
		crd("source.toolkit.fluxcd.io", "GitRepository", "gitrepositories"),
		crd("fluxcd.controlplane.io", "FluxInstance", "fluxinstances"),
		crd("widgets.fluxcd.io", "Widget", "widgets"),
		crd("example.com", "Gadget", "gadgets"),
	}}
	w, _ := startWatcher(t, api, WatcherOptions[testRecord]{})
	waitFor(t, 20*time.Second, func() error {
		if ok, pending := w.Ready(); !ok || len(w.State()) == 0 {
			return fmt.Errorf("not ready: %v", pending)
		}
		return nil
	})
	var got []string
	for _, s := range w.State() {
		got = append(got, s.Kind.Kind+"."+s.Kind.Group)
	}
	if want := []string{"FluxInstance.fluxcd.controlplane.io", "GitRepository.source.toolkit.fluxcd.io"}; !slices.Equal(got, want) {
		t.Errorf("default groups watch %v, want %v", got, want)
	}

	w2, _ := startWatcher(t, api, WatcherOptions[testRecord]{APIGroups: []string{"example.com"}})
	waitFor(t, 20*time.Second, func() error {
		if s := w2.State(); len(s) != 1 || s[0].Kind.Kind != "Gadget" || !s[0].Synced {
			return fmt.Errorf("--flux.api-groups=example.com watches %+v, want Gadget only", s)
		}
		return nil
	})
}

// A kind the API server forbids is logged once with what to grant, counted,
// reported unsynced and forbidden, and left out of readiness; granting it
// later syncs it without a restart.
func TestForbiddenKindIsLeftOutOfReadiness(t *testing.T) {
	api := &fakeAPI{forbidden: map[string]bool{"fluxcd.controlplane.io": true}, crds: []map[string]any{
		crd("source.toolkit.fluxcd.io", "GitRepository", "gitrepositories"),
		crd("fluxcd.controlplane.io", "FluxInstance", "fluxinstances"),
	}, objects: map[string][]map[string]any{
		"fluxinstances":   {object("fluxcd.controlplane.io", "FluxInstance", "flux-system", "flux")},
		"gitrepositories": {object("source.toolkit.fluxcd.io", "GitRepository", "apps", "podinfo")},
	}}
	w, logs := startWatcher(t, api, WatcherOptions[testRecord]{})
	waitFor(t, 20*time.Second, func() error {
		if ok, pending := w.Ready(); !ok || len(w.State()) != 2 {
			return fmt.Errorf("not ready: %v", pending)
		}
		return nil
	})
	// Several retries, each refused, and still one log line.
	waitFor(t, 20*time.Second, func() error {
		if s, _ := stateOf(w, "FluxInstance"); s.WatchErrors < 3 {
			return fmt.Errorf("%d watch errors so far", s.WatchErrors)
		}
		return nil
	})
	s, _ := stateOf(w, "FluxInstance")
	if s.Synced || !s.Forbidden || len(s.Records) != 0 {
		t.Errorf("FluxInstance synced=%v forbidden=%v records=%d, want unsynced, forbidden, none", s.Synced, s.Forbidden, len(s.Records))
	}
	if g, _ := stateOf(w, "GitRepository"); !g.Synced || g.Forbidden || len(g.Records) != 1 || g.WatchErrors != 0 {
		t.Errorf("GitRepository %+v, want synced with its one object and no errors", g)
	}
	lines := logs.lines("Forbidden to list and watch a Flux kind")
	if len(lines) != 1 {
		t.Fatalf("logged the Forbidden kind %d times over %d refused requests, want once:\n%s", len(lines), s.WatchErrors, strings.Join(lines, "\n"))
	}
	for _, want := range []string{`"kind":"FluxInstance"`, `"group":"fluxcd.controlplane.io"`, "grant get, list, watch on fluxcd.controlplane.io/fluxinstances", `"level":"ERROR"`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("the log line lacks %s:\n%s", want, lines[0])
		}
	}
	if n := len(logs.lines("Watch failed")); n != 0 {
		t.Errorf("the watch error handler logged the Forbidden retries %d times", n)
	}

	api.forbid("fluxcd.controlplane.io", false)
	// client-go backs off up to 30s between retries; a few failures in, the
	// next one comes within about 15s.
	waitFor(t, 45*time.Second, func() error {
		if s, _ := stateOf(w, "FluxInstance"); !s.Synced || s.Forbidden || len(s.Records) != 1 {
			return fmt.Errorf("FluxInstance synced=%v forbidden=%v records=%d after the grant", s.Synced, s.Forbidden, len(s.Records))
		}
		return nil
	})
	if n := len(logs.lines("Requests for a Flux kind succeed again")); n != 1 {
		t.Errorf("logged the recovery %d times, want once", n)
	}
}

// --namespaces a,a must watch a once: one informer per listed namespace
// would otherwise report each of its objects twice.
func TestNamespacesAreDeduplicated(t *testing.T) {
	api := &fakeAPI{forbidden: map[string]bool{}, crds: []map[string]any{
		crd("source.toolkit.fluxcd.io", "GitRepository", "gitrepositories"),
	}, objects: map[string][]map[string]any{"gitrepositories": {
		object("source.toolkit.fluxcd.io", "GitRepository", "a", "one"),
		object("source.toolkit.fluxcd.io", "GitRepository", "b", "two"),
		object("source.toolkit.fluxcd.io", "GitRepository", "c", "three"),
	}}}
	w, _ := startWatcher(t, api, WatcherOptions[testRecord]{Namespaces: []string{"a", "b", "a"}, ExcludeNamespaces: []string{"c", "c"}})
	if !slices.Equal(w.opts.Namespaces, []string{"a", "b"}) || !slices.Equal(w.opts.ExcludeNamespaces, []string{"c"}) {
		t.Errorf("namespaces %v, excluded %v; want [a b] and [c]", w.opts.Namespaces, w.opts.ExcludeNamespaces)
	}
	waitFor(t, 20*time.Second, func() error {
		if ok, pending := w.Ready(); !ok || len(w.State()) != 1 {
			return fmt.Errorf("not ready: %v", pending)
		}
		return nil
	})
	var names []string
	for _, r := range w.State()[0].Records {
		names = append(names, r.GetName())
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"one", "two"}) {
		t.Errorf("records %v, want one and two, each once", names)
	}
}

// Two groups may serve a Kind of the same name; readiness names both.
func TestReadyNamesKindAndGroup(t *testing.T) {
	api := &fakeAPI{forbidden: map[string]bool{}, crds: []map[string]any{
		crd("source.toolkit.fluxcd.io", "Bucket", "buckets"),
		crd("example.com", "Bucket", "buckets"),
	}}
	// Neither list answers until the test allows it: both stay pending.
	block := make(chan struct{})
	srvAPI := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "customresourcedefinitions") {
			select {
			case <-block:
			case <-r.Context().Done():
				return
			}
		}
		api.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(srvAPI)
	defer srv.Close()
	defer close(block)
	w, err := NewWatcher(&rest.Config{Host: srv.URL}, WatcherOptions[testRecord]{
		APIGroups: []string{"source.toolkit.fluxcd.io", "example.com"},
		Transform: func(_ Kind, u *unstructured.Unstructured, _ testRecord) (testRecord, []error) {
			return &metav1.ObjectMeta{Namespace: u.GetNamespace(), Name: u.GetName()}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	waitFor(t, 20*time.Second, func() error {
		_, pending := w.Ready()
		if want := []string{"Bucket.example.com", "Bucket.source.toolkit.fluxcd.io"}; !slices.Equal(pending, want) {
			return fmt.Errorf("pending %v, want %v", pending, want)
		}
		return nil
	})
}
