package events

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"hash"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The types below reproduce the JSON shape of fluxcd/pkg/apis/event/v1.Event
// (field order, names, omitempty) and of corev1.ObjectReference and
// metav1.Time, so json.Marshal yields the bytes notification-controller posts.

type fluxObjectReference struct {
	Kind            string `json:"kind,omitempty"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name,omitempty"`
	UID             string `json:"uid,omitempty"`
	APIVersion      string `json:"apiVersion,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
	FieldPath       string `json:"fieldPath,omitempty"`
}

// fluxTime marshals like metav1.Time: null when zero, else RFC 3339 in UTC
// with second precision.
type fluxTime struct{ time.Time }

func (t fluxTime) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339))
}

type fluxEvent struct {
	InvolvedObject      fluxObjectReference  `json:"involvedObject"`
	RelatedObject       *fluxObjectReference `json:"relatedObject,omitempty"`
	Severity            string               `json:"severity"`
	Timestamp           fluxTime             `json:"timestamp"`
	Message             string               `json:"message"`
	Reason              string               `json:"reason"`
	Action              string               `json:"action"`
	Metadata            map[string]string    `json:"metadata,omitempty"`
	ReportingController string               `json:"reportingController"`
	ReportingInstance   string               `json:"reportingInstance,omitempty"`
}

func kustomizationEvent(name, severity, reason string, ts time.Time, meta map[string]string) fluxEvent {
	return fluxEvent{
		InvolvedObject: fluxObjectReference{
			Kind: "Kustomization", Namespace: "apps", Name: name,
			UID: "7d0cdc51-ddcf-4743-b223-83ca5c699632", APIVersion: "kustomize.toolkit.fluxcd.io/v1",
		},
		Severity:            severity,
		Timestamp:           fluxTime{ts},
		Message:             "Applied revision",
		Reason:              reason,
		Action:              "Reconciling",
		Metadata:            meta,
		ReportingController: "kustomize-controller",
		ReportingInstance:   "kustomize-controller-7c7b47f5f-8bhrp",
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

// testHashes is kept apart from the production table on purpose: the tests
// sign independently of the code under test.
var testHashes = map[string]func() hash.Hash{
	"sha224": sha256.New224, "sha256": sha256.New, "sha384": sha512.New384, "sha512": sha512.New,
}

// sign returns an X-Signature value the way generic-hmac computes it.
func sign(alg string, key, body []byte) string {
	mac := hmac.New(testHashes[alg], key)
	mac.Write(body)
	return alg + "=" + hex.EncodeToString(mac.Sum(nil))
}

// fluxHeaders are the headers notification-controller's forwarder sets.
func fluxHeaders(controller, signature string) map[string]string {
	h := map[string]string{"Content-Type": "application/json", "Gotk-Component": controller}
	if signature != "" {
		h["X-Signature"] = signature
	}
	return h
}

type testServer struct {
	*httptest.Server
	r *Receiver
}

func newTestServer(t *testing.T, cfg Config, tweak func(*Receiver)) *testServer {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if tweak != nil {
		tweak(r)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, r)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testServer{Server: srv, r: r}
}

func (s *testServer) do(t *testing.T, method string, body io.Reader, headers map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+Path, body)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, Path, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func (s *testServer) post(t *testing.T, body []byte, headers map[string]string) int {
	t.Helper()
	return s.do(t, http.MethodPost, bytes.NewReader(body), headers)
}

// postSigned posts e exactly as a generic-hmac Provider does.
func (s *testServer) postSigned(t *testing.T, e fluxEvent, alg string, key []byte) int {
	t.Helper()
	body := mustMarshal(t, e)
	return s.post(t, body, fluxHeaders(e.ReportingController, sign(alg, key, body)))
}

func writeKeyFile(t *testing.T, key string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sampleValue gathers r through a pedantic registry and returns the value of
// the sample of metric with exactly the given labels.
func sampleValue(t *testing.T, r *Receiver, metric string, labels map[string]string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// requestCount reads flux_events_requests_total{code}.
func requestCount(t *testing.T, r *Receiver, code int) float64 {
	t.Helper()
	v, _ := sampleValue(t, r, "flux_events_requests_total", map[string]string{"code": strconv.Itoa(code)})
	return v
}

// sorted returns a sorted copy.
func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// eventSeries counts the series of the per-object families.
func eventSeries(t *testing.T, r *Receiver) int {
	t.Helper()
	return testutil.CollectAndCount(r, "flux_events_total", "flux_event_last_timestamp_seconds", "flux_event_revision_info")
}

// waitFor polls cond for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
