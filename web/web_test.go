package web

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// blockingCollector holds a scrape until released, and records the
// deadline the scrape's context carried.
type blockingCollector struct {
	entered  chan struct{}
	release  chan struct{}
	deadline chan time.Duration
	ctx      context.Context
}

func (b *blockingCollector) Describe(chan<- *prometheus.Desc) {}

func (b *blockingCollector) Collect(chan<- prometheus.Metric) {
	if d, ok := b.ctx.Deadline(); ok {
		b.deadline <- time.Until(d)
	} else {
		b.deadline <- 0
	}
	b.entered <- struct{}{}
	<-b.release
}

func newServer(t *testing.T, maxRequests int) (*httptest.Server, *blockingCollector) {
	t.Helper()
	b := &blockingCollector{entered: make(chan struct{}, 4), release: make(chan struct{}), deadline: make(chan time.Duration, 4)}
	mux, err := NewMux(Options{
		TelemetryPath: "/metrics",
		Static:        prometheus.NewRegistry(),
		Scrape: func(ctx context.Context) prometheus.Collector {
			c := *b
			c.ctx = ctx
			return &c
		},
		TimeoutOffset: 500 * time.Millisecond,
		MaxRequests:   maxRequests,
		Ready:         func() (bool, []string) { return false, []string{"HelmRelease"} },
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, b
}

// TestMaxRequests: with --web.max-requests=1, a second scrape while one is
// in flight is refused with 503 instead of piling up.
func TestMaxRequests(t *testing.T) {
	srv, b := newServer(t, 1)
	first := make(chan int, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			first <- -1
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	select {
	case <-b.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("first scrape never reached the collector")
	}
	// Without the limit this request would wait on the held scrape.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatalf("second concurrent scrape was not refused: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "--web.max-requests") {
		t.Errorf("second concurrent scrape answered %d %q, want 503 naming --web.max-requests", resp.StatusCode, body)
	}
	close(b.release)
	if code := <-first; code != http.StatusOK {
		t.Errorf("first scrape answered %d, want 200", code)
	}
}

// TestScrapeDeadline: the scrape context ends at Prometheus's announced
// timeout less the offset.
func TestScrapeDeadline(t *testing.T) {
	srv, b := newServer(t, 0)
	close(b.release)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := <-b.deadline; d <= 8*time.Second || d > 9500*time.Millisecond {
		t.Errorf("scrape deadline %v from now, want just under 9.5s", d)
	}
}

// TestReadyNamesPendingKinds: /-/ready answers 503 with what is syncing.
func TestReadyNamesPendingKinds(t *testing.T) {
	srv, _ := newServer(t, 0)
	resp, err := http.Get(srv.URL + "/-/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "HelmRelease") {
		t.Errorf("/-/ready answered %d %q", resp.StatusCode, body)
	}
}
