package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
)

// fluxEvent is the JSON notification-controller's generic providers post
// (fluxcd/pkg/apis/event/v1.Event).
type fluxEvent struct {
	InvolvedObject      corev1.ObjectReference `json:"involvedObject"`
	Severity            string                 `json:"severity"`
	Timestamp           metav1.Time            `json:"timestamp"`
	Message             string                 `json:"message"`
	Reason              string                 `json:"reason"`
	Metadata            map[string]string      `json:"metadata,omitempty"`
	ReportingController string                 `json:"reportingController"`
	ReportingInstance   string                 `json:"reportingInstance,omitempty"`
}

// post sends the event as notification-controller's generic-hmac provider
// does: JSON body, Gotk-Component header, X-Signature over the exact bytes.
func post(t testing.TB, url string, ev fluxEvent, key []byte) int {
	t.Helper()
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return postBody(t, url, body, ev.ReportingController, key)
}

// postBody sends body as is, signed with key unless key is nil.
func postBody(t testing.TB, url string, body []byte, component string, key []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/api/v1/events", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Gotk-Component", component)
	if key != nil {
		mac := hmac.New(sha256.New, key)
		mac.Write(body)
		req.Header.Set("X-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST event: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// kubeletSecret lays out a Secret volume holding token as kubelet's
// AtomicWriter does (..<timestamp>/token, ..data -> ..<timestamp>, token ->
// ..data/token) and returns the path of the token file.
func kubeletSecret(t testing.TB, token []byte) string {
	t.Helper()
	dir := t.TempDir()
	ts := "..2026_09_10_08_15_02.1234567890"
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ts, "token"), token, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "token"), filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "token")
}

// TestEventsWebhook drives the running exporter's webhook with signed
// events and checks the series, the rejections, and that series of an
// object deleted from the API server expire after the TTL.
func TestEventsWebhook(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	// The Secret made with `echo s3cr3t-token | base64`: 13 bytes with the
	// newline, mounted byte for byte.
	stored := []byte("s3cr3t-token\n")
	keyFile := kubeletSecret(t, stored)
	key := []byte("s3cr3t-token")
	c.apply(t, []byte(`
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec: {interval: 10m, path: ./apps, prune: true, sourceRef: {kind: GitRepository, name: fleet}}
`))
	c.apply(t, []byte(`
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo, namespace: apps}
spec:
  interval: 5m
  chart: {spec: {chart: podinfo, sourceRef: {kind: HelmRepository, name: podinfo}}}
`))
	e := startExporter(t, c.kubeconfig, "--events.enabled", "--events.hmac-key-file="+keyFile, "--events.series-ttl=2s")
	e.waitReady()

	// notification-controller v1.7 and later sign with the token exactly as
	// stored, v1.3 to v1.6 with it trimmed: both are accepted, and the
	// body is posted byte for byte as given.
	body := []byte(`{"involvedObject":{"kind":"Kustomization","namespace":"flux-system","name":"apps","apiVersion":"kustomize.toolkit.fluxcd.io/v1"},"severity":"info","timestamp":"2026-09-10T08:15:02Z","message":"Reconciliation finished","reason":"ReconciliationSucceeded","metadata":{"revision":"main@sha1:4b825dc642cb6eb9a060e54bf8d69288fbee4904"},"reportingController":"kustomize-controller","reportingInstance":"kc-1"}`)
	for _, k := range []struct {
		name string
		key  []byte
		want int
	}{
		{"the 13 stored bytes", stored, http.StatusAccepted},
		{"the token trimmed", key, http.StatusAccepted},
		{"another key", []byte("s3cr3t-token\r\n"), http.StatusUnauthorized},
	} {
		if code := postBody(t, e.url, body, "kustomize-controller", k.key); code != k.want {
			t.Fatalf("event signed with %s (%q) answered %d, want %d", k.name, k.key, code, k.want)
		}
	}

	ks := corev1.ObjectReference{Kind: "Kustomization", Namespace: "flux-system", Name: "apps", APIVersion: "kustomize.toolkit.fluxcd.io/v1"}
	hr := corev1.ObjectReference{Kind: "HelmRelease", Namespace: "apps", Name: "podinfo", APIVersion: "helm.toolkit.fluxcd.io/v2"}
	t0 := time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)
	for _, ev := range []fluxEvent{
		{InvolvedObject: ks, Severity: "info", Timestamp: metav1.NewTime(t0), Reason: "ReconciliationSucceeded", Message: "Reconciliation finished",
			Metadata: map[string]string{"kustomize.toolkit.fluxcd.io/revision": "main@sha1:1111111111111111111111111111111111111111"}, ReportingController: "kustomize-controller"},
		{InvolvedObject: ks, Severity: "info", Timestamp: metav1.NewTime(t0.Add(time.Minute)), Reason: "ReconciliationSucceeded", Message: "Reconciliation finished",
			Metadata: map[string]string{"revision": "main@sha1:2222222222222222222222222222222222222222"}, ReportingController: "kustomize-controller"},
		{InvolvedObject: hr, Severity: "error", Timestamp: metav1.NewTime(t0.Add(2 * time.Minute)), Reason: "DriftDetected", Message: "Deployment/apps/podinfo changed",
			Metadata: map[string]string{"helm.toolkit.fluxcd.io/revision": "6.9.2"}, ReportingController: "helm-controller"},
	} {
		if code := post(t, e.url, ev, key); code != http.StatusAccepted {
			t.Fatalf("event %s/%s answered %d, want 202", ev.InvolvedObject.Name, ev.Reason, code)
		}
	}
	// Rejections: a wrong key, and no signature at all.
	bad := fluxEvent{InvolvedObject: ks, Severity: "info", Timestamp: metav1.NewTime(t0), Reason: "Forged", ReportingController: "kustomize-controller"}
	if code := post(t, e.url, bad, []byte("wrong")); code != http.StatusUnauthorized {
		t.Fatalf("badly signed event answered %d, want 401", code)
	}
	if code := post(t, e.url, bad, nil); code != http.StatusUnauthorized {
		t.Fatalf("unsigned event answered %d, want 401", code)
	}

	s := e.scrape()
	ksID := map[string]string{"kind": "Kustomization", "name": "apps", "exported_namespace": "flux-system"}
	hrID := map[string]string{"kind": "HelmRelease", "name": "podinfo", "exported_namespace": "apps"}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		// Two from the raw body above, two from these events.
		{"flux_events_total", with(ksID, map[string]string{"severity": "info", "reason": "ReconciliationSucceeded", "controller": "kustomize-controller"}), 4},
		{"flux_events_total", with(hrID, map[string]string{"severity": "error", "reason": "DriftDetected", "controller": "helm-controller"}), 1},
		// The raw body's older timestamp and revision do not roll these back.
		{"flux_event_last_timestamp_seconds", with(ksID, map[string]string{"severity": "info"}), float64(t0.Add(time.Minute).Unix())},
		{"flux_event_revision_info", with(ksID, map[string]string{"revision": "main@sha1:2222222222222222222222222222222222222222"}), 1},
		{"flux_event_revision_info", with(hrID, map[string]string{"revision": "6.9.2"}), 1},
		{"flux_events_requests_total", map[string]string{"code": "202"}, 5},
		{"flux_events_requests_total", map[string]string{"code": "401"}, 3},
	}
	for _, ch := range checks {
		if v, ok := s.value(ch.name, ch.labels); !ok || v != ch.want {
			t.Errorf("%s%v = %v (found %v), want %v\n%s", ch.name, ch.labels, v, ok, ch.want, grep(s.text, ch.name))
		}
	}
	if n := len(s.find("flux_event_revision_info", ksID)); n != 1 {
		t.Errorf("%d revision series for the Kustomization, want only the newest", n)
	}
	if strings.Contains(s.text, `reason="Forged"`) {
		t.Error("a rejected event reached the event series")
	}

	// Deleting the HelmRelease from the API server expires its event series
	// after the TTL; the Kustomization, still present, keeps its series.
	if err := c.dyn.Resource(gvrs["HelmRelease"]).Namespace("apps").Delete(context.Background(), "podinfo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		s := e.scrape()
		if len(s.find("flux_events_total", hrID)) != 0 {
			return fmt.Errorf("event series of the deleted HelmRelease remain")
		}
		return nil
	})
	if s := e.scrape(); len(s.find("flux_events_total", ksID)) != 1 {
		t.Errorf("the existing Kustomization lost its event series:\n%s", grep(s.text, "flux_events_total"))
	}
}

// TestEventsUnwatchedExpire: the exporter watches flux-system only, so its
// cache can never see a deletion in another namespace, nor of a kind it
// does not watch. Series of such objects expire the TTL after their last
// event; those of a watched object that still exists stay, though their
// last event is just as old.
func TestEventsUnwatchedExpire(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	for _, ns := range []string{"flux-system", "team-b"} {
		c.apply(t, []byte(`
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: `+ns+`}
spec: {interval: 10m, path: ./apps, prune: true, sourceRef: {kind: GitRepository, name: fleet}}
`))
	}
	e := startExporter(t, c.kubeconfig, "--events.enabled", "--events.allow-unsigned",
		"--events.series-ttl=3s", "--namespaces=flux-system")
	e.waitReady()

	watched := corev1.ObjectReference{Kind: "Kustomization", Namespace: "flux-system", Name: "apps", APIVersion: "kustomize.toolkit.fluxcd.io/v1"}
	// It exists in the API server, but outside --namespaces.
	otherNS := corev1.ObjectReference{Kind: "Kustomization", Namespace: "team-b", Name: "apps", APIVersion: "kustomize.toolkit.fluxcd.io/v1"}
	otherKind := corev1.ObjectReference{Kind: "Widget", Namespace: "flux-system", Name: "apps", APIVersion: "example.com/v1"}
	ids := map[string]map[string]string{}
	for _, ref := range []corev1.ObjectReference{watched, otherNS, otherKind} {
		ev := fluxEvent{InvolvedObject: ref, Severity: "info", Timestamp: metav1.Now(), Reason: "ReconciliationSucceeded", ReportingController: "kustomize-controller"}
		if code := post(t, e.url, ev, nil); code != http.StatusAccepted {
			t.Fatalf("event for %s %s/%s answered %d, want 202", ref.Kind, ref.Namespace, ref.Name, code)
		}
		ids[ref.Kind+" "+ref.Namespace] = map[string]string{"kind": ref.Kind, "exported_namespace": ref.Namespace, "name": ref.Name}
	}
	s := e.scrape()
	for what, id := range ids {
		if len(s.find("flux_events_total", id)) != 1 {
			t.Fatalf("no series for %s right after its event:\n%s", what, grep(s.text, "flux_events_total"))
		}
	}
	eventually(t, 30*time.Second, func() error {
		s := e.scrape()
		for _, what := range []string{"Kustomization team-b", "Widget flux-system"} {
			if len(s.find("flux_events_total", ids[what])) != 0 {
				return fmt.Errorf("event series of the unwatched %s remain", what)
			}
		}
		return nil
	})
	// One more sweep (every TTL/4) after the others went.
	time.Sleep(time.Second)
	if s := e.scrape(); len(s.find("flux_events_total", ids["Kustomization flux-system"])) != 1 {
		t.Errorf("the watched, existing Kustomization lost its event series:\n%s", grep(s.text, "flux_events_total"))
	}
}

// TestEventsOwnListener serves the webhook on its own address, as when the
// metrics listener requires basic auth that a Provider cannot send.
func TestEventsOwnListener(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	e := startExporter(t, c.kubeconfig, "--events.enabled", "--events.allow-unsigned", "--events.listen-address=127.0.0.1:0")
	e.waitReady()
	if code, _ := e.get("/api/v1/events", nil); code != http.StatusNotFound {
		t.Errorf("metrics listener serves the webhook (GET answered %d), want 404", code)
	}
	var eventsURL string
	eventually(t, 10*time.Second, func() error {
		for _, line := range strings.Split(e.logs.String(), "\n") {
			var l struct{ Msg, Address, Listener string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "Listening on" && l.Listener == "events" {
				eventsURL = "http://" + l.Address
				return nil
			}
		}
		return fmt.Errorf("no events listener in the logs")
	})
	ev := fluxEvent{InvolvedObject: corev1.ObjectReference{Kind: "GitRepository", Namespace: "flux-system", Name: "fleet"},
		Severity: "info", Timestamp: metav1.Now(), Reason: "NewArtifact", ReportingController: "source-controller"}
	if code := post(t, eventsURL, ev, nil); code != http.StatusAccepted {
		t.Fatalf("unsigned event on the events listener answered %d, want 202", code)
	}
	if v, ok := e.scrape().value("flux_events_total", map[string]string{"kind": "GitRepository", "name": "fleet", "reason": "NewArtifact"}); !ok || v != 1 {
		t.Errorf("event not counted: %v %v", v, ok)
	}
	if n := strings.Count(e.logs.String(), "accepts unsigned events"); n != 1 {
		t.Errorf("%d warnings about unsigned events at start, want one", n)
	}
}
