package web

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/flux-exporter/flux_exporter/internal/collector"
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
		Scrape: func(ctx context.Context) (prometheus.Collector, collector.ObjectWriter) {
			c := *b
			c.ctx = ctx
			return &c, func(*bufio.Writer, expfmt.Format) error { return nil }
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

// tinyTimeouts make the slow-client tests quick: 200ms for the headers,
// then 1 s per 1000 bytes of body, and 300ms of idleness.
var tinyTimeouts = timeouts{readHeader: 200 * time.Millisecond, minBodyRate: 1000, idle: 300 * time.Millisecond}

// startServer serves h with the given body limit and timeouts on a real
// listener, as web.Serve would, and returns its address.
func startServer(t *testing.T, h http.Handler, maxBody int64, to timeouts) string {
	t.Helper()
	srv := serverWith(h, maxBody, to)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// bodyHandler answers 200 with the body's length once it has read it all,
// and reports the read's outcome.
func bodyHandler(read chan<- error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		read <- err
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, len(b))
	})
}

// dribble writes chunks with a pause before each, until the server cuts
// the connection or limit passes, and returns how long the server took to
// close it after the first write.
func dribble(t *testing.T, conn net.Conn, chunks []string, pause, limit time.Duration) time.Duration {
	t.Helper()
	// Reading notices the close even while the writes still succeed into
	// the socket buffer.
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_, _ = io.Copy(io.Discard, conn)
	}()
	start := time.Now()
	for _, c := range chunks {
		select {
		case <-closed:
			return time.Since(start)
		case <-time.After(pause):
		}
		if _, err := conn.Write([]byte(c)); err != nil {
			break
		}
	}
	select {
	case <-closed:
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("server kept a slow connection open for %v", limit)
		return 0
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestSlowClientsCutOff: a slow-loris client that trickles its headers or
// its body is disconnected once the read timeouts pass, and a handler
// reading the body gets an error instead of waiting for it.
func TestSlowClientsCutOff(t *testing.T) {
	const maxBody = 1000 // ReadTimeout 200ms + 1s
	read := make(chan error, 4)
	addr := startServer(t, bodyHandler(read), maxBody, tinyTimeouts)

	t.Run("headers", func(t *testing.T) {
		conn := dial(t, addr)
		// 100 header lines, one every 50ms: 5s if the server waited.
		lines := []string{"POST / HTTP/1.1\r\nHost: x\r\n"}
		for i := range 100 {
			lines = append(lines, fmt.Sprintf("X-Slow-%d: 1\r\n", i))
		}
		if took := dribble(t, conn, lines, 50*time.Millisecond, 5*time.Second); took > 3*time.Second {
			t.Errorf("slow headers cut off after %v, want about 200ms", took)
		}
		select {
		case err := <-read:
			t.Fatalf("handler ran for a request whose headers never ended (read err %v)", err)
		default:
		}
	})

	t.Run("body", func(t *testing.T) {
		conn := dial(t, addr)
		// The whole allowed body, 10 bytes every 50ms: 200 B/s, 5s in all.
		chunks := []string{fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", maxBody)}
		for range maxBody / 10 {
			chunks = append(chunks, strings.Repeat("x", 10))
		}
		if took := dribble(t, conn, chunks, 50*time.Millisecond, 5*time.Second); took > 4*time.Second {
			t.Errorf("slow body cut off after %v, want about 1.2s", took)
		}
		select {
		case err := <-read:
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("handler's body read ended with %v, want a timeout", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("handler never finished reading the slow body")
		}
	})

	t.Run("idle", func(t *testing.T) {
		conn := dial(t, addr)
		req := fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", 2, "{}")
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		<-read
		// The connection stays open for keep-alive, then the server closes
		// it once idle for 300ms.
		if took := dribble(t, conn, nil, 0, 5*time.Second); took > 3*time.Second {
			t.Errorf("idle connection closed after %v, want about 300ms", took)
		}
	})
}

// TestTimeoutsSpareLegitimateRequests: a body of the largest allowed size
// sent at a fair pace, and a response that takes longer than ReadTimeout to
// compute, both go through.
func TestTimeoutsSpareLegitimateRequests(t *testing.T) {
	const maxBody = 1000
	read := make(chan error, 1)
	addr := startServer(t, bodyHandler(read), maxBody, tinyTimeouts)
	conn := dial(t, addr)
	// 1000 bytes in 4 parts 100ms apart: 2500 B/s, above the 1000 B/s floor.
	if _, err := conn.Write([]byte(fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", maxBody))); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		time.Sleep(100 * time.Millisecond)
		if _, err := conn.Write([]byte(strings.Repeat("x", maxBody/4))); err != nil {
			t.Fatal(err)
		}
	}
	must(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != fmt.Sprint(maxBody) {
		t.Errorf("full body at a fair pace answered %d %q, want 200 %q", resp.StatusCode, body, fmt.Sprint(maxBody))
	}
	if err := <-read; err != nil {
		t.Errorf("body read: %v", err)
	}

	// ReadTimeout bounds reading the request, not the handler: a scrape
	// longer than it keeps its context and gets its answer.
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			http.Error(w, "context ended", http.StatusServiceUnavailable)
		case <-time.After(600 * time.Millisecond):
			fmt.Fprint(w, "done")
		}
	})
	slowAddr := startServer(t, slow, 0, tinyTimeouts)
	resp, err = (&http.Client{Timeout: 10 * time.Second}).Get("http://" + slowAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "done" {
		t.Errorf("handler slower than ReadTimeout answered %d %q", resp.StatusCode, body)
	}
}

// TestNewServerTimeouts pins the production values: the header timeout
// alone for GET-only servers, plus 64s for the default 1 MiB events body.
func TestNewServerTimeouts(t *testing.T) {
	for _, tc := range []struct {
		maxBody int64
		read    time.Duration
	}{
		{0, 10 * time.Second},
		{1, 11 * time.Second},
		{1 << 20, 74 * time.Second},
		{10 << 20, 650 * time.Second},
	} {
		srv := NewServer(http.NotFoundHandler(), tc.maxBody)
		if srv.ReadHeaderTimeout != 10*time.Second || srv.ReadTimeout != tc.read || srv.IdleTimeout != 2*time.Minute || srv.WriteTimeout != 0 {
			t.Errorf("NewServer(%d): ReadHeaderTimeout %v, ReadTimeout %v (want %v), IdleTimeout %v, WriteTimeout %v",
				tc.maxBody, srv.ReadHeaderTimeout, srv.ReadTimeout, tc.read, srv.IdleTimeout, srv.WriteTimeout)
		}
	}
}

type sized int64

func (s sized) ServeHTTP(http.ResponseWriter, *http.Request) {}
func (s sized) MaxBodyBytes() int64                          { return int64(s) }

func TestMaxBodyBytes(t *testing.T) {
	routes := map[string]http.Handler{"/a": sized(10), "/b": http.NotFoundHandler(), "/c": sized(1 << 20)}
	if got := MaxBodyBytes(routes); got != 1<<20 {
		t.Errorf("MaxBodyBytes = %d, want %d", got, 1<<20)
	}
	if got := MaxBodyBytes(nil); got != 0 {
		t.Errorf("MaxBodyBytes(nil) = %d, want 0", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// objectLine stands for the per-object series an ObjectWriter writes.
const objectLine = "flux_resource_suspended{exported_namespace=\"ns\",kind=\"Kustomization\",name=\"apps\"} "

// TestScrapeNegotiates: one response holds the gathered families and the
// per-object ones, in the negotiated format (text or OpenMetrics, never
// protobuf), compressed when the scraper accepts gzip, and without the
// families the metric filter drops.
func TestScrapeNegotiates(t *testing.T) {
	static := prometheus.NewRegistry()
	static.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flux_exporter_test_kept", Help: "Kept."}, func() float64 { return 1 }))
	static.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flux_exporter_test_dropped", Help: "Dropped."}, func() float64 { return 1 }))
	filter, err := collector.NewMetricFilter(nil, []string{"_dropped$"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux, err := NewMux(Options{
		TelemetryPath: "/metrics",
		Static:        static,
		Filter:        filter,
		Scrape: func(context.Context) (prometheus.Collector, collector.ObjectWriter) {
			return prometheus.NewRegistry(), func(w *bufio.Writer, f expfmt.Format) error {
				header := "# HELP flux_resource_suspended Suspended.\n# TYPE flux_resource_suspended gauge\n"
				value := "1"
				if f.FormatType() == expfmt.TypeOpenMetrics {
					value = "1.0"
				}
				// Enough series to pass the threshold below which a body is
				// not worth compressing.
				if _, err := w.WriteString(header + objectLine + value + "\n"); err != nil {
					return err
				}
				for i := range 40 {
					fmt.Fprintf(w, "flux_resource_suspended{exported_namespace=\"ns\",kind=\"Kustomization\",name=\"app-%d\"} %s\n", i, value)
				}
				return nil
			}
		},
		Ready:  func() (bool, []string) { return true, nil },
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, tc := range []struct {
		accept, wantType, wantValue string
		eof                         bool
	}{
		{"", "text/plain", "1", false},
		{"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "application/openmetrics-text", "1.0", true},
		// Protobuf is not offered: the per-object series exist only as text.
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,text/plain;version=0.0.4;q=0.5", "text/plain", "1", false},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text := string(body)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.wantType) {
			t.Errorf("Accept %q: Content-Type %q, want %s", tc.accept, ct, tc.wantType)
		}
		if !strings.Contains(text, objectLine+tc.wantValue+"\n") || !strings.Contains(text, "flux_exporter_test_kept") {
			t.Errorf("Accept %q: body lacks the gathered or the per-object series:\n%s", tc.accept, text)
		}
		if strings.Contains(text, "flux_exporter_test_dropped") {
			t.Errorf("Accept %q: the denied family was served", tc.accept)
		}
		if got := strings.HasSuffix(text, "# EOF\n"); got != tc.eof {
			t.Errorf("Accept %q: ends with # EOF: %v, want %v", tc.accept, got, tc.eof)
		}
	}

	// gzip, as promhttp negotiates it; Go's client asks for it and
	// decompresses by itself, so ask explicitly to see the encoding.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if enc := resp.Header.Get("Content-Encoding"); enc != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip", enc)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil || !strings.Contains(string(body), objectLine) {
		t.Errorf("gzip body does not decompress to the scrape (%v):\n%s", err, body)
	}
}
