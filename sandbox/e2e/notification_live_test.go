package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
)

// liveToken is the generic-hmac Provider's token as `echo s3cret-token |
// base64` stores it: with the newline, which notification-controller v1.9.3
// signs with, as TestNotificationControllerLive shows.
const liveToken = "s3cret-token\n"

// liveObjects are what the events are about; notification-controller needs
// none of them, the exporter keeps event series only for objects it knows.
const liveObjects = `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: podinfo, namespace: apps}
spec: {interval: 10m, prune: true, path: ./kustomize, sourceRef: {kind: GitRepository, name: podinfo}}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo, namespace: apps}
spec: {interval: 10m, chart: {spec: {chart: podinfo, sourceRef: {kind: HelmRepository, name: podinfo}}}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: podinfo, namespace: apps}
spec: {interval: 1m, url: "https://github.com/stefanprodan/podinfo"}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: other, namespace: apps}
spec: {interval: 1m, url: "https://github.com/stefanprodan/podinfo"}
`

// liveAlerting is the Providers and Alerts: one Provider is the exporter's
// webhook, one an address nothing listens on. %s are the webhook's URL and
// the dead address.
const liveAlerting = `
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {name: exporter, namespace: apps}
spec: {type: generic-hmac, address: "%s", secretRef: {name: exporter-token}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {name: nowhere, namespace: apps}
spec: {type: generic, address: "http://%s/"}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {name: kustomizations, namespace: apps}
spec:
  providerRef: {name: exporter}
  eventSeverity: info
  eventSources: [{kind: Kustomization, name: "*"}]
  inclusionList: ["^Reconciliation finished", "failed"]
  summary: "apps on prod"
  eventMetadata: {cluster: prod-eu-1, env: prod}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {name: releases, namespace: apps}
spec:
  providerRef: {name: exporter}
  eventSeverity: error
  eventSources: [{kind: HelmRelease, name: "*"}, {kind: GitRepository, name: podinfo}]
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {name: pager, namespace: apps}
spec:
  providerRef: {name: nowhere}
  eventSources: [{kind: HelmRelease, name: podinfo}]
`

// liveEvents are posted to notification-controller's events endpoint as
// the controllers' event recorder (fluxcd/pkg/runtime/events) posts them,
// with the metadata keys prefixed by the object's API group. reaches says
// which Alert forwards each to the exporter ("" for none).
var liveEvents = []struct {
	ev      fluxEvent
	reaches string
}{
	{fluxEvent{
		InvolvedObject: ref("Kustomization", "kustomize.toolkit.fluxcd.io/v1", "podinfo"), Severity: "info", Reason: "ReconciliationSucceeded",
		Message:  "Reconciliation finished in 1.2s, next run in 10m0s",
		Metadata: map[string]string{"kustomize.toolkit.fluxcd.io/revision": "main@sha1:1111111", "kustomize.toolkit.fluxcd.io/commit_status": "update"},
	}, "kustomizations"},
	{fluxEvent{
		InvolvedObject: ref("Kustomization", "kustomize.toolkit.fluxcd.io/v1", "podinfo"), Severity: "info", Reason: "DependencyNotReady",
		Message: "Dependencies do not meet ready condition, retrying in 30s",
	}, ""}, // left out by inclusionList
	{fluxEvent{
		InvolvedObject: ref("Kustomization", "kustomize.toolkit.fluxcd.io/v1", "podinfo"), Severity: "error", Reason: "ReconciliationFailed",
		Message:  "Deployment/apps/podinfo dry-run failed: field is immutable\n",
		Metadata: map[string]string{"kustomize.toolkit.fluxcd.io/revision": "main@sha1:2222222"},
	}, "kustomizations"},
	{fluxEvent{
		InvolvedObject: ref("HelmRelease", "helm.toolkit.fluxcd.io/v2", "podinfo"), Severity: "info", Reason: "UpgradeSucceeded",
		Message:  "Helm upgrade succeeded for release apps/podinfo.v2 with chart podinfo@6.5.0",
		Metadata: map[string]string{"helm.toolkit.fluxcd.io/revision": "6.5.0", "helm.toolkit.fluxcd.io/app-version": "6.5.0"},
	}, ""}, // below the releases Alert's eventSeverity; pager's Provider is unreachable
	{fluxEvent{
		InvolvedObject: ref("HelmRelease", "helm.toolkit.fluxcd.io/v2", "podinfo"), Severity: "error", Reason: "UpgradeFailed",
		Message:  "Helm upgrade failed for release apps/podinfo with chart podinfo@6.5.1: timed out waiting for the condition\n\nLast Helm logs:\n\nwaiting for 1 resource",
		Metadata: map[string]string{"helm.toolkit.fluxcd.io/revision": "6.5.1", "helm.toolkit.fluxcd.io/app-version": "6.5.1"},
	}, "releases"},
	{fluxEvent{
		InvolvedObject: ref("GitRepository", "source.toolkit.fluxcd.io/v1", "other"), Severity: "error", Reason: "GitOperationFailed",
		Message: "failed to checkout and determine revision: unable to clone",
	}, ""}, // no Alert names GitRepository/other
	{fluxEvent{
		InvolvedObject: ref("GitRepository", "source.toolkit.fluxcd.io/v1", "podinfo"), Severity: "error", Reason: "GitOperationFailed",
		Message: "failed to checkout and determine revision: unable to clone 'https://github.com/stefanprodan/podinfo'",
	}, "releases"},
}

func ref(kind, apiVersion, name string) corev1.ObjectReference {
	return corev1.ObjectReference{Kind: kind, APIVersion: apiVersion, Namespace: "apps", Name: name, UID: "0d1c2b3a-0000-4000-8000-000000000001"}
}

// TestNotificationControllerLive runs the real notification-controller
// v1.9.3 as the webhook's client: Alerts with eventSources, inclusionList,
// eventSeverity, summary and eventMetadata filter and forward events posted
// in the controllers' format to a generic-hmac Provider whose token ends in
// a newline. The exporter must count exactly what was forwarded, refuse
// none of it, and count the deliveries notification-controller could not
// make to an unreachable Provider from the Events it records on the Alert.
func TestNotificationControllerLive(t *testing.T) {
	c := newCluster(t, apiserver.ModeFull)
	kc, err := kubernetes.NewForConfig(c.srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ensureNamespaces(t, kc, "flux-system", "apps")
	keyFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(keyFile, []byte(liveToken), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, c.kubeconfig, "--events.enabled", "--events.hmac-key-file="+keyFile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kc.CoreV1().Secrets("apps").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "exporter-token", Namespace: "apps"},
		Data:       map[string][]byte{"token": []byte(liveToken)},
	}, metaCreate); err != nil {
		t.Fatal(err)
	}
	for _, m := range bytes.Split([]byte(liveObjects+"---"+fmt.Sprintf(liveAlerting, e.url+"/api/v1/events", freeAddr(t))), []byte("\n---\n")) {
		c.apply(t, m)
	}
	events := freeAddr(t)
	startController(t, c, "notification-controller", "--events-addr="+events, "--receiverAddr="+freeAddr(t), "--rate-limit-interval=1s")
	e.waitReady()

	forwarded := map[string]int{}
	for _, le := range liveEvents {
		le.ev.Timestamp = metav1.Now()
		le.ev.ReportingController = map[string]string{"Kustomization": "kustomize-controller", "HelmRelease": "helm-controller", "GitRepository": "source-controller"}[le.ev.InvolvedObject.Kind]
		if code := postToNotificationController(t, "http://"+events, le.ev); code != http.StatusAccepted {
			t.Fatalf("notification-controller answered %d to %s %s", code, le.ev.InvolvedObject.Kind, le.ev.Reason)
		}
		if le.reaches != "" {
			forwarded[le.ev.InvolvedObject.Kind+"/"+le.ev.InvolvedObject.Name+"/"+le.ev.Severity+"/"+le.ev.Reason]++
		}
	}
	want := 0
	for _, n := range forwarded {
		want += n
	}
	eventually(t, 60*time.Second, func() error {
		s := e.scrape()
		got, _ := s.value("flux_events_requests_total", map[string]string{"code": "202"})
		if int(got) != want {
			return fmt.Errorf("the webhook accepted %v events, want the %d the Alerts forward", got, want)
		}
		return nil
	})
	s := e.scrape()
	assertLiveEvents(t, s, forwarded)
	assertDispatchFailures(t, c, e)
}

// postToNotificationController posts ev to notification-controller's
// events endpoint unsigned, as the controllers do (--events-addr).
func postToNotificationController(t testing.TB, url string, ev fluxEvent) int {
	t.Helper()
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url+"/", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST to notification-controller: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// assertLiveEvents checks what reached the exporter: no request refused,
// exactly the forwarded events counted per object, severity and reason,
// and the revisions notification-controller passed on without their
// API-group prefix.
func assertLiveEvents(t *testing.T, s scrape, forwarded map[string]int) {
	t.Helper()
	for _, m := range s.find("flux_events_requests_total", nil) {
		if code := labels(m)["code"]; code != "202" && sampleValue(m) > 0 {
			t.Errorf("the webhook answered %s to %v requests from notification-controller; a signed forward must be accepted", code, sampleValue(m))
		}
	}
	got := map[string]int{}
	for _, m := range s.find("flux_events_total", nil) {
		l := labels(m)
		got[l["kind"]+"/"+l["name"]+"/"+l["severity"]+"/"+l["reason"]] += int(sampleValue(m))
	}
	if fmt.Sprint(got) != fmt.Sprint(forwarded) {
		t.Errorf("flux_events_total per object, severity and reason = %v, want what the Alerts forward: %v", got, forwarded)
	}
	for kind, rev := range map[string]string{"Kustomization": "main@sha1:2222222"} {
		if _, ok := s.value("flux_event_revision_info", map[string]string{"kind": kind, "name": "podinfo", "exported_namespace": "apps", "revision": rev}); !ok {
			t.Errorf("no flux_event_revision_info{kind=%q,revision=%q}: %v", kind, rev, s.find("flux_event_revision_info", nil))
		}
	}
	if _, ok := s.value("flux_event_revision_info", map[string]string{"kind": "HelmRelease", "revision": "6.5.1"}); !ok {
		t.Errorf("no revision 6.5.1 from helm-controller's UpgradeFailed: %v", s.find("flux_event_revision_info", nil))
	}
}

// assertDispatchFailures waits for the NotificationDispatchFailed Event
// notification-controller records on the pager Alert when its Provider's
// address refuses the connection (about 15 s of retries), then checks the
// exporter's counts, and that a second exporter started afterwards counts
// none of the failures that happened before it (no phantom counts on a
// restart) while still saying when the last one was.
func assertDispatchFailures(t *testing.T, c *cluster, e *exporter) {
	t.Helper()
	pager := map[string]string{"kind": "Alert", "name": "pager", "exported_namespace": "apps", "provider": "nowhere"}
	// The pager Alert matched both HelmRelease events.
	eventually(t, 90*time.Second, func() error {
		if v, ok := e.scrape().value("flux_notification_dispatch_failures_total", pager); !ok || v != 2 {
			return fmt.Errorf("flux_notification_dispatch_failures_total%v = %v (present %v), want 2", pager, v, ok)
		}
		return nil
	})
	s := e.scrape()
	last, ok := s.value("flux_notification_last_dispatch_failure_timestamp_seconds", pager)
	if now := float64(time.Now().Unix()); !ok || last < now-300 || last > now+5 {
		t.Errorf("flux_notification_last_dispatch_failure_timestamp_seconds = %v (present %v), want within the last 5 minutes of %v", last, ok, now)
	}
	for _, m := range s.find("flux_notification_dispatch_failures_total", nil) {
		if l := labels(m); l["name"] != "pager" {
			t.Errorf("a dispatch failure counted for Alert %s, whose Provider accepts everything", l["name"])
		}
	}
	restarted := startExporter(t, c.kubeconfig)
	restarted.waitReady()
	eventually(t, 30*time.Second, func() error {
		rs := restarted.scrape()
		v, ok := rs.value("flux_notification_dispatch_failures_total", pager)
		ts, tok := rs.value("flux_notification_last_dispatch_failure_timestamp_seconds", pager)
		if !ok || !tok {
			return fmt.Errorf("the restarted exporter has no dispatch series for the pager Alert yet")
		}
		if v != 0 || ts != last {
			return fmt.Errorf("after a restart: failures_total = %v, want 0 (the failures happened before it started); last timestamp = %v, want %v", v, ts, last)
		}
		return nil
	})
}
