package events

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

const testKey = "7152fed34dd6149a7c75a276c510da27cb6f82b0"

func TestEndToEnd(t *testing.T) {
	// A trailing newline, as `kubectl create secret --from-file` leaves it;
	// notification-controller up to v1.6 signs with the token trimmed.
	// TestKeyFileExactOrTrimmed covers the exact bytes later releases use.
	s := newTestServer(t, Config{HMACKeyFile: writeKeyFile(t, testKey+"\n")}, nil)
	key := []byte(testKey)

	t0 := time.Date(2024, 5, 1, 9, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	t2 := t1.Add(time.Minute)

	// Newer notification-controllers keep the API group prefix.
	succeeded := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", t1,
		map[string]string{"kustomize.toolkit.fluxcd.io/revision": "main@sha1:aaaa"})
	failed := kustomizationEvent("webapp", "error", "HealthCheckFailed", t2,
		map[string]string{"kustomize.toolkit.fluxcd.io/revision": "main@sha1:bbbb"})
	// A retried delivery of an older event must not roll anything back.
	stale := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", t0,
		map[string]string{"kustomize.toolkit.fluxcd.io/revision": "main@sha1:0000"})
	// Older notification-controllers strip the prefix before forwarding.
	gitRepo := fluxEvent{
		InvolvedObject: fluxObjectReference{Kind: "GitRepository", Namespace: "flux-system", Name: "flux-system",
			UID: "0b0f4bb6-5c1e-4c8e-9e35-1b4a6c2d1e11", APIVersion: "source.toolkit.fluxcd.io/v1"},
		Severity: "info", Timestamp: fluxTime{t1}, Message: "stored artifact", Reason: "NewArtifact",
		Metadata:            map[string]string{"revision": "main@sha1:cccc", "token": "1"},
		ReportingController: "source-controller",
	}
	// No reportingController: the Gotk-Component header names the controller.
	helm := fluxEvent{
		InvolvedObject: fluxObjectReference{Kind: "HelmRelease", Namespace: "apps", Name: "podinfo",
			APIVersion: "helm.toolkit.fluxcd.io/v2"},
		Severity: "trace", Timestamp: fluxTime{t2}, Message: "upgrade in progress", Reason: "Progressing",
	}
	helmBody := mustMarshal(t, helm)

	for i, step := range []struct {
		name string
		send func() int
	}{
		{"info sha256", func() int { return s.postSigned(t, succeeded, "sha256", key) }},
		{"info again sha224", func() int { return s.postSigned(t, succeeded, "sha224", key) }},
		{"error sha384", func() int { return s.postSigned(t, failed, "sha384", key) }},
		{"stale sha256", func() int { return s.postSigned(t, stale, "sha256", key) }},
		{"unprefixed sha512", func() int { return s.postSigned(t, gitRepo, "sha512", key) }},
		{"header controller", func() int {
			return s.post(t, helmBody, fluxHeaders("helm-controller", sign("sha256", key, helmBody)))
		}},
	} {
		if code := step.send(); code != http.StatusAccepted {
			t.Fatalf("step %d (%s): got %d, want 202", i, step.name, code)
		}
	}

	want := fmt.Sprintf(`
# HELP flux_events_total Total number of Flux events received from notification-controller, per object, severity, reason and reporting controller.
# TYPE flux_events_total counter
flux_events_total{controller="helm-controller",exported_namespace="apps",kind="HelmRelease",name="podinfo",reason="Progressing",severity="trace"} 1
flux_events_total{controller="kustomize-controller",exported_namespace="apps",kind="Kustomization",name="webapp",reason="HealthCheckFailed",severity="error"} 1
flux_events_total{controller="kustomize-controller",exported_namespace="apps",kind="Kustomization",name="webapp",reason="ReconciliationSucceeded",severity="info"} 3
flux_events_total{controller="source-controller",exported_namespace="flux-system",kind="GitRepository",name="flux-system",reason="NewArtifact",severity="info"} 1
# HELP flux_event_last_timestamp_seconds Time of the newest Flux event received per object and severity, in seconds since the Unix epoch, as stamped by the reporting controller, or the time of receipt when the event has none.
# TYPE flux_event_last_timestamp_seconds gauge
flux_event_last_timestamp_seconds{exported_namespace="apps",kind="HelmRelease",name="podinfo",severity="trace"} %[2]d
flux_event_last_timestamp_seconds{exported_namespace="apps",kind="Kustomization",name="webapp",severity="error"} %[2]d
flux_event_last_timestamp_seconds{exported_namespace="apps",kind="Kustomization",name="webapp",severity="info"} %[1]d
flux_event_last_timestamp_seconds{exported_namespace="flux-system",kind="GitRepository",name="flux-system",severity="info"} %[1]d
# HELP flux_event_revision_info Newest source revision named in a Flux event for the object, with the origin revision the same event named (originRevision metadata: the Git commit an OCI artifact was built from), empty when it named none; the value is always 1.
# TYPE flux_event_revision_info gauge
flux_event_revision_info{exported_namespace="apps",kind="Kustomization",name="webapp",origin_revision="",revision="main@sha1:bbbb"} 1
flux_event_revision_info{exported_namespace="flux-system",kind="GitRepository",name="flux-system",origin_revision="",revision="main@sha1:cccc"} 1
# HELP flux_events_requests_total Total number of requests to the Flux events webhook, by HTTP status code of the answer.
# TYPE flux_events_requests_total counter
flux_events_requests_total{code="202"} 6
flux_events_requests_total{code="400"} 0
flux_events_requests_total{code="401"} 0
flux_events_requests_total{code="405"} 0
flux_events_requests_total{code="413"} 0
flux_events_requests_total{code="415"} 0
# HELP flux_events_dropped_total Total number of valid Flux events that were accepted but not recorded, by cause.
# TYPE flux_events_dropped_total counter
flux_events_dropped_total{cause="max_series"} 0
`, t1.Unix(), t2.Unix())
	if err := testutil.CollectAndCompare(s.r, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}

	// A newer event moves the revision and the timestamp forward.
	t3 := t2.Add(time.Minute)
	newer := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", t3,
		map[string]string{"kustomize.toolkit.fluxcd.io/revision": "main@sha1:dddd", "kustomize.toolkit.fluxcd.io/originRevision": "v1.2.0@sha1:eeee"})
	if code := s.postSigned(t, newer, "sha256", key); code != http.StatusAccepted {
		t.Fatalf("newer event: got %d", code)
	}
	wantRev := `
# HELP flux_event_revision_info Newest source revision named in a Flux event for the object, with the origin revision the same event named (originRevision metadata: the Git commit an OCI artifact was built from), empty when it named none; the value is always 1.
# TYPE flux_event_revision_info gauge
flux_event_revision_info{exported_namespace="apps",kind="Kustomization",name="webapp",origin_revision="v1.2.0@sha1:eeee",revision="main@sha1:dddd"} 1
flux_event_revision_info{exported_namespace="flux-system",kind="GitRepository",name="flux-system",origin_revision="",revision="main@sha1:cccc"} 1
`
	if err := testutil.CollectAndCompare(s.r, strings.NewReader(wantRev), "flux_event_revision_info"); err != nil {
		t.Fatal(err)
	}
	wantTS := fmt.Sprintf(`
# HELP flux_event_last_timestamp_seconds Time of the newest Flux event received per object and severity, in seconds since the Unix epoch, as stamped by the reporting controller, or the time of receipt when the event has none.
# TYPE flux_event_last_timestamp_seconds gauge
flux_event_last_timestamp_seconds{exported_namespace="apps",kind="HelmRelease",name="podinfo",severity="trace"} %[2]d
flux_event_last_timestamp_seconds{exported_namespace="apps",kind="Kustomization",name="webapp",severity="error"} %[2]d
flux_event_last_timestamp_seconds{exported_namespace="apps",kind="Kustomization",name="webapp",severity="info"} %[1]d
flux_event_last_timestamp_seconds{exported_namespace="flux-system",kind="GitRepository",name="flux-system",severity="info"} %[3]d
`, t3.Unix(), t2.Unix(), t1.Unix())
	if err := testutil.CollectAndCompare(s.r, strings.NewReader(wantTS), "flux_event_last_timestamp_seconds"); err != nil {
		t.Fatal(err)
	}
}

func TestMissingTimestampUsesReceiptTime(t *testing.T) {
	received := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s := newTestServer(t, Config{AllowUnsigned: true}, func(r *Receiver) {
		r.now = func() time.Time { return received }
	})
	e := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", time.Time{}, nil)
	if code := s.post(t, mustMarshal(t, e), fluxHeaders(e.ReportingController, "")); code != http.StatusAccepted {
		t.Fatalf("got %d, want 202", code)
	}
	want := fmt.Sprintf(`
# HELP flux_event_last_timestamp_seconds Time of the newest Flux event received per object and severity, in seconds since the Unix epoch, as stamped by the reporting controller, or the time of receipt when the event has none.
# TYPE flux_event_last_timestamp_seconds gauge
flux_event_last_timestamp_seconds{exported_namespace="apps",kind="Kustomization",name="webapp",severity="info"} %d
`, received.Unix())
	if err := testutil.CollectAndCompare(s.r, strings.NewReader(want), "flux_event_last_timestamp_seconds"); err != nil {
		t.Fatal(err)
	}
}

func TestRejections(t *testing.T) {
	const maxBody = 4096
	key := []byte(testKey)
	s := newTestServer(t, Config{HMACKeyFile: writeKeyFile(t, testKey), MaxBodyBytes: maxBody}, nil)

	good := mustMarshal(t, kustomizationEvent("webapp", "info", "ReconciliationSucceeded", time.Now(), nil))
	big := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", time.Now(), nil)
	big.Message = strings.Repeat("x", maxBody)
	bigBody := mustMarshal(t, big)
	signed := func(body []byte) map[string]string {
		return fluxHeaders("kustomize-controller", sign("sha256", key, body))
	}
	signedEvent := func(mutate func(*fluxEvent)) ([]byte, map[string]string) {
		e := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", time.Now(), nil)
		mutate(&e)
		b := mustMarshal(t, e)
		return b, signed(b)
	}
	withHeader := func(h map[string]string, k, v string) map[string]string {
		out := map[string]string{}
		for hk, hv := range h {
			out[hk] = hv
		}
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	noKind, noKindH := signedEvent(func(e *fluxEvent) { e.InvolvedObject.Kind = "" })
	noName, noNameH := signedEvent(func(e *fluxEvent) { e.InvolvedObject.Name = "" })
	badSev, badSevH := signedEvent(func(e *fluxEvent) { e.Severity = "warning" })
	longName, longNameH := signedEvent(func(e *fluxEvent) { e.InvolvedObject.Name = strings.Repeat("n", maxLabelBytes+1) })
	badTS := []byte(strings.Replace(string(good), `"timestamp":"`, `"timestamp":"yesterday `, 1))
	noRef := []byte(`{"severity":"info","reason":"x","message":"m"}`)

	cases := []struct {
		name    string
		method  string
		body    []byte
		chunked bool
		headers map[string]string
		want    int
	}{
		{"wrong method", http.MethodGet, nil, false, signed(nil), http.StatusMethodNotAllowed},
		{"put", http.MethodPut, good, false, signed(good), http.StatusMethodNotAllowed},
		{"wrong content type", http.MethodPost, good, false, withHeader(signed(good), "Content-Type", "text/plain"), http.StatusUnsupportedMediaType},
		{"no content type", http.MethodPost, good, false, withHeader(signed(good), "Content-Type", ""), http.StatusUnsupportedMediaType},
		{"oversize body", http.MethodPost, bigBody, false, signed(bigBody), http.StatusRequestEntityTooLarge},
		{"oversize chunked body", http.MethodPost, bigBody, true, signed(bigBody), http.StatusRequestEntityTooLarge},
		{"no signature", http.MethodPost, good, false, fluxHeaders("kustomize-controller", ""), http.StatusUnauthorized},
		{"bad signature", http.MethodPost, good, false, withHeader(signed(good), "X-Signature", sign("sha256", []byte("other-key"), good)), http.StatusUnauthorized},
		{"signature of other body", http.MethodPost, good, false, signed(append([]byte(" "), good...)), http.StatusUnauthorized},
		{"unknown algorithm", http.MethodPost, good, false, withHeader(signed(good), "X-Signature", "md5="+strings.Repeat("ab", 16)), http.StatusUnauthorized},
		{"sha1 not accepted", http.MethodPost, good, false, withHeader(signed(good), "X-Signature", "sha1="+strings.Repeat("ab", 20)), http.StatusUnauthorized},
		{"signature without algorithm", http.MethodPost, good, false, withHeader(signed(good), "X-Signature", strings.TrimPrefix(sign("sha256", key, good), "sha256=")), http.StatusUnauthorized},
		{"signature not hex", http.MethodPost, good, false, withHeader(signed(good), "X-Signature", "sha256=zz"), http.StatusUnauthorized},
		{"malformed JSON", http.MethodPost, []byte(`{"involvedObject":`), false, signed([]byte(`{"involvedObject":`)), http.StatusBadRequest},
		{"trailing garbage", http.MethodPost, append(append([]byte{}, good...), "{}"...), false, signed(append(append([]byte{}, good...), "{}"...)), http.StatusBadRequest},
		{"missing object reference", http.MethodPost, noRef, false, signed(noRef), http.StatusBadRequest},
		{"missing kind", http.MethodPost, noKind, false, noKindH, http.StatusBadRequest},
		{"missing name", http.MethodPost, noName, false, noNameH, http.StatusBadRequest},
		{"unknown severity", http.MethodPost, badSev, false, badSevH, http.StatusBadRequest},
		{"label too long", http.MethodPost, longName, false, longNameH, http.StatusBadRequest},
		{"malformed timestamp", http.MethodPost, badTS, false, signed(badTS), http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := requestCount(t, s.r, tc.want)
			var body = strings.NewReader(string(tc.body))
			var code int
			if tc.chunked {
				// Hiding the length makes the client send chunked, so only
				// MaxBytesReader can stop it.
				code = s.do(t, tc.method, struct{ *strings.Reader }{body}, tc.headers)
			} else {
				code = s.do(t, tc.method, body, tc.headers)
			}
			if code != tc.want {
				t.Fatalf("got %d, want %d", code, tc.want)
			}
			if got := requestCount(t, s.r, tc.want); got != before+1 {
				t.Errorf("flux_events_requests_total{code=%q} = %v, want %v", fmt.Sprint(tc.want), got, before+1)
			}
			if n := eventSeries(t, s.r); n != 0 {
				t.Errorf("rejected request created %d event series", n)
			}
		})
	}
	if got := requestCount(t, s.r, http.StatusAccepted); got != 0 {
		t.Errorf("flux_events_requests_total{code=\"202\"} = %v, want 0", got)
	}
	// The same good body with its proper signature is accepted, so each
	// rejection above was caused by the one thing the case changed.
	if code := s.post(t, good, signed(good)); code != http.StatusAccepted {
		t.Fatalf("control request: got %d, want 202", code)
	}
	if n := eventSeries(t, s.r); n != 2 {
		t.Errorf("control request created %d series, want 2", n)
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \t\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no key and not allowed", Config{}, "HMAC key file is required"},
		{"missing key file", Config{HMACKeyFile: filepath.Join(dir, "absent")}, "reading HMAC key file"},
		{"key file of white space only", Config{HMACKeyFile: empty}, "is empty"},
		{"unsigned allowed", Config{AllowUnsigned: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.cfg)
			if tc.wantErr == "" {
				if err != nil || r == nil {
					t.Fatalf("New: %v", err)
				}
				if r.maxBodyBytes != 1<<20 || r.ttl != time.Hour || r.maxSeries != 10000 {
					t.Errorf("defaults: max body %d, ttl %v, max series %d", r.maxBodyBytes, r.ttl, r.maxSeries)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestUnsigned(t *testing.T) {
	s := newTestServer(t, Config{AllowUnsigned: true}, nil)
	e := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", time.Now(), nil)
	// A generic (not generic-hmac) Provider sends no signature.
	if code := s.post(t, mustMarshal(t, e), fluxHeaders("kustomize-controller", "")); code != http.StatusAccepted {
		t.Fatalf("got %d, want 202", code)
	}
	want := `
# HELP flux_events_total Total number of Flux events received from notification-controller, per object, severity, reason and reporting controller.
# TYPE flux_events_total counter
flux_events_total{controller="kustomize-controller",exported_namespace="apps",kind="Kustomization",name="webapp",reason="ReconciliationSucceeded",severity="info"} 1
`
	if err := testutil.CollectAndCompare(s.r, strings.NewReader(want), "flux_events_total"); err != nil {
		t.Fatal(err)
	}
}

func TestKeyRotation(t *testing.T) {
	for _, layout := range []string{"kubelet symlink swap", "rename"} {
		t.Run(layout, func(t *testing.T) {
			oldKey, newKey := []byte("old-token"), []byte("new-token")
			dir := t.TempDir()
			var keyFile string
			var rotate func()
			if layout == "rename" {
				keyFile = filepath.Join(dir, "token")
				write(t, keyFile, oldKey)
				rotate = func() {
					tmp := filepath.Join(dir, ".token.tmp")
					write(t, tmp, newKey)
					must(t, os.Rename(tmp, keyFile))
				}
			} else {
				// The layout kubelet's AtomicWriter gives a Secret volume:
				// token -> ..data/token, ..data -> ..<timestamp>/.
				write(t, filepath.Join(dir, "..v1", "token"), oldKey)
				must(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
				must(t, os.Symlink(filepath.Join("..data", "token"), filepath.Join(dir, "token")))
				keyFile = filepath.Join(dir, "token")
				rotate = func() {
					write(t, filepath.Join(dir, "..v2", "token"), newKey)
					must(t, os.Symlink("..v2", filepath.Join(dir, "..data_tmp")))
					must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
					must(t, os.RemoveAll(filepath.Join(dir, "..v1")))
				}
			}

			s := newTestServer(t, Config{HMACKeyFile: keyFile}, func(r *Receiver) {
				r.keyPollInterval = 10 * time.Millisecond
			})
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); s.r.Run(ctx) }()
			t.Cleanup(func() { cancel(); wg.Wait() })

			e := kustomizationEvent("webapp", "info", "ReconciliationSucceeded", time.Now(), nil)
			if code := s.postSigned(t, e, "sha256", oldKey); code != http.StatusAccepted {
				t.Fatalf("old key before rotation: got %d, want 202", code)
			}
			if code := s.postSigned(t, e, "sha256", newKey); code != http.StatusUnauthorized {
				t.Fatalf("new key before rotation: got %d, want 401", code)
			}
			rotate()
			waitFor(t, "the new key to be accepted", func() bool {
				return s.postSigned(t, e, "sha256", newKey) == http.StatusAccepted
			})
			if code := s.postSigned(t, e, "sha256", oldKey); code != http.StatusUnauthorized {
				t.Fatalf("old key after rotation: got %d, want 401", code)
			}
		})
	}
}

func TestKeyReloadKeepsKeyWhenFileVanishes(t *testing.T) {
	keyFile := writeKeyFile(t, testKey)
	r, err := New(Config{HMACKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.Remove(keyFile))
	r.reloadKey()
	if keys := r.currentKeys(); len(keys) != 1 || string(keys[0]) != testKey {
		t.Fatalf("keys after failed reload = %q, want the previous key", keys)
	}
}

// kubeletSecretDir lays out a Secret volume as kubelet's AtomicWriter does:
// the data in a timestamped directory, ..data -> that directory, and each key
// a symlink through ..data. It returns the path of the token file.
func kubeletSecretDir(t *testing.T, token []byte) string {
	t.Helper()
	dir := t.TempDir()
	ts := "..2026_09_10_08_15_02.1234567890"
	write(t, filepath.Join(dir, ts, "token"), token)
	must(t, os.Symlink(ts, filepath.Join(dir, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "token"), filepath.Join(dir, "token")))
	return filepath.Join(dir, "token")
}

// tokenEvent is a body as notification-controller posts it, sent as is.
const tokenEvent = `{"involvedObject":{"kind":"Kustomization","namespace":"flux-system","name":"apps","apiVersion":"kustomize.toolkit.fluxcd.io/v1"},"severity":"info","timestamp":"2026-09-10T08:15:02Z","message":"Reconciliation finished","reason":"ReconciliationSucceeded","metadata":{"revision":"main@sha1:4b825dc642cb6eb9a060e54bf8d69288fbee4904"},"reportingController":"kustomize-controller","reportingInstance":"kc-1"}`

// TestKeyFileExactOrTrimmed: a Secret made with `echo s3cr3t-token | base64`
// holds 13 bytes ending in a newline, and kubelet mounts them as they are.
// notification-controller from v1.7 (and up to v1.2) signs with those 13
// bytes, v1.3 to v1.6 with the token trimmed; both must be accepted, and
// nothing else.
func TestKeyFileExactOrTrimmed(t *testing.T) {
	stored := []byte("s3cr3t-token\n")
	keyFile := kubeletSecretDir(t, stored)
	if b, err := os.ReadFile(keyFile); err != nil || len(b) != 13 {
		t.Fatalf("key file holds %q (%v), want the 13 stored bytes", b, err)
	}
	s := newTestServer(t, Config{HMACKeyFile: keyFile}, nil)
	body := []byte(tokenEvent)

	for _, tc := range []struct {
		name string
		alg  string
		key  string
		want int
	}{
		{"exact bytes, as notification-controller v1.7+", "sha256", "s3cr3t-token\n", http.StatusAccepted},
		{"trimmed, as notification-controller v1.3 to v1.6", "sha256", "s3cr3t-token", http.StatusAccepted},
		{"exact bytes, sha512", "sha512", "s3cr3t-token\n", http.StatusAccepted},
		{"trimmed, sha224", "sha224", "s3cr3t-token", http.StatusAccepted},
		{"other key", "sha256", "other-token", http.StatusUnauthorized},
		{"leading space", "sha256", " s3cr3t-token", http.StatusUnauthorized},
		{"CRLF", "sha256", "s3cr3t-token\r\n", http.StatusUnauthorized},
		{"two newlines", "sha256", "s3cr3t-token\n\n", http.StatusUnauthorized},
		{"prefix", "sha256", "s3cr3t-toke", http.StatusUnauthorized},
		{"empty", "sha256", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := s.post(t, body, fluxHeaders("kustomize-controller", sign(tc.alg, []byte(tc.key), body))); code != tc.want {
				t.Fatalf("signed with %q: got %d, want %d", tc.key, code, tc.want)
			}
		})
	}
	labels := map[string]string{"kind": "Kustomization", "exported_namespace": "flux-system", "name": "apps",
		"severity": "info", "reason": "ReconciliationSucceeded", "controller": "kustomize-controller"}
	if v, ok := sampleValue(t, s.r, "flux_events_total", labels); !ok || v != 4 {
		t.Errorf("flux_events_total = %v (present %v), want the 4 accepted events", v, ok)
	}
}

// TestKeyReloadSeesWhiteSpaceChange: a key file that gains or loses only a
// trailing newline changes which signatures are valid, so it is reloaded.
func TestKeyReloadSeesWhiteSpaceChange(t *testing.T) {
	keyFile := writeKeyFile(t, testKey)
	r, err := New(Config{HMACKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	write(t, keyFile, []byte(testKey+"\n"))
	r.reloadKey()
	if keys := r.currentKeys(); len(keys) != 2 || string(keys[0]) != testKey+"\n" || string(keys[1]) != testKey {
		t.Fatalf("keys after reload = %q, want the exact and the trimmed key", keys)
	}
}

// TestComponentHeaderIsFallback: notification-controller sets Gotk-Component
// to the event's reportingController, but only the body is signed, so the
// body wins; the header names the controller only when the body does not.
// The receiver already behaved so before this test was added.
func TestComponentHeaderIsFallback(t *testing.T) {
	s := newTestServer(t, Config{AllowUnsigned: true}, nil)
	named := kustomizationEvent("named", "info", "ReconciliationSucceeded", time.Now(), nil)
	anonymous := kustomizationEvent("anonymous", "info", "ReconciliationSucceeded", time.Now(), nil)
	anonymous.ReportingController = ""
	for _, e := range []fluxEvent{named, anonymous} {
		if code := s.post(t, mustMarshal(t, e), fluxHeaders("header-controller", "")); code != http.StatusAccepted {
			t.Fatalf("post %s: %d", e.InvolvedObject.Name, code)
		}
	}
	want := `
# HELP flux_events_total Total number of Flux events received from notification-controller, per object, severity, reason and reporting controller.
# TYPE flux_events_total counter
flux_events_total{controller="header-controller",exported_namespace="apps",kind="Kustomization",name="anonymous",reason="ReconciliationSucceeded",severity="info"} 1
flux_events_total{controller="kustomize-controller",exported_namespace="apps",kind="Kustomization",name="named",reason="ReconciliationSucceeded",severity="info"} 1
`
	if err := testutil.CollectAndCompare(s.r, strings.NewReader(want), "flux_events_total"); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	must(t, os.WriteFile(path, b, 0o600))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
