// Package web serves the exporter over HTTP: landing page, health and
// readiness, and the metrics endpoint, all behind exporter-toolkit so that
// --web.config.file brings TLS and basic auth.
package web

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	toolkit "github.com/prometheus/exporter-toolkit/web"

	"github.com/flux-exporter/flux_exporter/internal/collector"
)

// Options describe what the mux serves.
type Options struct {
	TelemetryPath string
	Version       string
	// Static holds the collectors that do not need the scrape's context.
	Static prometheus.Gatherer
	// Scrape builds the collectors of one scrape, bound to its deadline,
	// and the writer of its per-object families, which the handler calls
	// after encoding everything the collectors gathered.
	Scrape func(ctx context.Context) (prometheus.Collector, collector.ObjectWriter)
	// Filter drops gathered families by name (--metric-allowlist and
	// --metric-denylist); nil keeps them all.
	Filter *collector.MetricFilter
	// Instrument, when set, records the metrics handler's own metrics.
	Instrument prometheus.Registerer
	// TimeoutOffset is taken off Prometheus's scrape timeout, so that the
	// answer arrives before the scraper gives up.
	TimeoutOffset time.Duration
	MaxRequests   int
	// Ready reports readiness and, when not ready, what is still pending.
	Ready  func() (bool, []string)
	Routes map[string]http.Handler
	Logger *slog.Logger
}

// NewMux builds the exporter's HTTP routes.
func NewMux(o Options) (*http.ServeMux, error) {
	mux := http.NewServeMux()
	// The limit lives here, not in promhttp: a promhttp handler is built per
	// scrape to bind that scrape's context, so its own limit would never bite.
	var inFlight chan struct{}
	if o.MaxRequests > 0 {
		inFlight = make(chan struct{}, o.MaxRequests)
	}
	var metrics http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if inFlight != nil {
			select {
			case inFlight <- struct{}{}:
				defer func() { <-inFlight }()
			default:
				http.Error(w, fmt.Sprintf("Limit of %d concurrent scrapes reached (--web.max-requests); try again later.", o.MaxRequests), http.StatusServiceUnavailable)
				return
			}
		}
		ctx, cancel := scrapeContext(r, o.TimeoutOffset)
		defer cancel()
		serveScrape(w, r, ctx, o)
	})
	// Compression as promhttp negotiates it (Accept-Encoding), by a
	// maintained handler with a faster gzip than the standard library's.
	gz, err := gzhttp.NewWrapper(gzhttp.MinSize(gzipMinSize))
	if err != nil {
		return nil, fmt.Errorf("gzip handler: %w", err)
	}
	metrics = gz(metrics)
	if o.Instrument != nil {
		metrics = promhttp.InstrumentMetricHandler(o.Instrument, metrics)
	}
	mux.Handle(o.TelemetryPath, metrics)
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Healthy")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if ok, pending := o.Ready(); !ok {
			http.Error(w, "Not ready: caches still syncing: "+strings.Join(pending, ", "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "Ready")
	})
	for path, h := range o.Routes {
		mux.Handle(path, h)
	}
	if o.TelemetryPath != "/" {
		landing, err := toolkit.NewLandingPage(toolkit.LandingConfig{
			Name:        "Flux Exporter",
			Description: "Prometheus exporter for Flux CD objects and controllers",
			Version:     o.Version,
			Links: []toolkit.LandingLinks{
				{Address: o.TelemetryPath, Text: "Metrics"},
				{Address: "/-/healthy", Text: "Health"},
				{Address: "/-/ready", Text: "Readiness"},
			},
		})
		if err != nil {
			return nil, fmt.Errorf("landing page: %w", err)
		}
		mux.Handle("/", landing)
	}
	return mux, nil
}

// gzipMinSize is the smallest body worth compressing; an error page or an
// empty scrape is not.
const gzipMinSize = 1 << 10

// offeredFormats are the exposition formats the metrics endpoint offers, by
// preference: those the per-object series can be written in. Prometheus
// always accepts the text format, so no scraper is left without one.
var offeredFormats = func() []expfmt.Format {
	var out []expfmt.Format
	for _, f := range expfmt.DefaultOpenMetricsAcceptedFormats() {
		if t := f.FormatType(); t == expfmt.TypeTextPlain || t == expfmt.TypeOpenMetrics {
			out = append(out, f)
		}
	}
	return out
}()

// serveScrape answers one scrape: the families the collectors gather,
// encoded by client_golang's encoders, then the per-object families written
// from the records' rendered bytes, in one format and one response.
func serveScrape(w http.ResponseWriter, r *http.Request, ctx context.Context, o Options) {
	c, writeObjects := o.Scrape(ctx)
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	mfs, err := prometheus.Gatherers{o.Static, reg}.Gather()
	if err != nil {
		// As promhttp's ContinueOnError: report, and serve what gathered.
		o.Logger.Error("Error gathering metrics", "err", err)
		if len(mfs) == 0 {
			http.Error(w, "An error has occurred while gathering metrics:\n\n"+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	format := expfmt.NegotiateAccept(r.Header, offeredFormats...)
	w.Header().Set("Content-Type", string(format))
	w.Header().Add("Vary", "Accept")
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := expfmt.NewEncoder(bw, format)
	for _, mf := range mfs {
		if !o.Filter.Includes(mf.GetName()) {
			continue
		}
		if err := enc.Encode(mf); err != nil {
			o.Logger.Error("Error encoding metric family", "family", mf.GetName(), "err", err)
			return
		}
	}
	if err := writeObjects(bw, format); err != nil {
		o.Logger.Error("Error writing per-object metrics", "err", err)
		return
	}
	if closer, ok := enc.(expfmt.Closer); ok {
		if err := closer.Close(); err != nil {
			o.Logger.Error("Error closing the exposition", "err", err)
			return
		}
	}
	if err := bw.Flush(); err != nil {
		o.Logger.Debug("Scrape response not delivered", "err", err)
	}
}

// scrapeContext bounds a scrape by the deadline Prometheus announces.
func scrapeContext(r *http.Request, offset time.Duration) (context.Context, context.CancelFunc) {
	h := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds")
	secs, err := strconv.ParseFloat(h, 64)
	if h == "" || err != nil || secs <= 0 {
		return context.WithCancel(r.Context())
	}
	d := time.Duration(secs*float64(time.Second)) - offset
	if d <= 0 {
		d = time.Duration(secs * float64(time.Second))
	}
	return context.WithTimeout(r.Context(), d)
}

// The timeouts of every server the exporter runs. They bound how long a
// client may hold a connection while sending a request too slowly, or while
// idle, without cutting any legitimate request.
const (
	// readHeaderTimeout is for the request line and headers.
	readHeaderTimeout = 10 * time.Second
	// minBodyRate is the slowest upload of a request body a server waits
	// for, in bytes per second: far below any link notification-controller
	// posts over, so only a stalled or deliberately slow client hits it.
	// notification-controller gives up on a Provider after its timeout
	// (15s by default) anyway.
	minBodyRate = 16 << 10
	// idleTimeout closes a keep-alive connection with no request. It
	// outlasts the usual scrape intervals, so Prometheus can keep reusing
	// its connection.
	idleTimeout = 2 * time.Minute
)

type timeouts struct {
	readHeader  time.Duration
	minBodyRate int64
	idle        time.Duration
}

var defaultTimeouts = timeouts{readHeader: readHeaderTimeout, minBodyRate: minBodyRate, idle: idleTimeout}

// NewServer returns the server for h. maxBodyBytes is the largest request
// body a handler of h reads, 0 when they serve only GET. ReadTimeout, which
// net/http counts from the start of the request to the end of its body,
// allows the headers plus that body at minBodyRate. There is no WriteTimeout:
// a scrape may rightly take as long as Prometheus's scrape timeout, which
// the metrics handler enforces itself.
func NewServer(h http.Handler, maxBodyBytes int64) *http.Server {
	return serverWith(h, maxBodyBytes, defaultTimeouts)
}

func serverWith(h http.Handler, maxBodyBytes int64, t timeouts) *http.Server {
	// Rounded up to whole seconds, so any body allows at least one more.
	body := time.Duration((max(maxBodyBytes, 0)+t.minBodyRate-1)/t.minBodyRate) * time.Second
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.readHeader,
		ReadTimeout:       t.readHeader + body,
		// Set explicitly: left at zero, net/http would use ReadTimeout.
		IdleTimeout: t.idle,
	}
}

// MaxBodyBytes is the largest MaxBodyBytes() of the routes that have one,
// such as the events receiver, for NewServer of a mux serving them.
func MaxBodyBytes(routes map[string]http.Handler) int64 {
	var n int64
	for _, h := range routes {
		if b, ok := h.(interface{ MaxBodyBytes() int64 }); ok {
			n = max(n, b.MaxBodyBytes())
		}
	}
	return n
}

// Serve runs srv until ctx is done, then shuts it down gracefully.
func Serve(ctx context.Context, srv *http.Server, flags *toolkit.FlagConfig, logger *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- toolkit.ListenAndServe(srv, flags, logger) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve HTTP: %w", err)
	case <-ctx.Done():
	}
	// ctx is already cancelled, so the shutdown gets a fresh deadline.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down HTTP server: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve HTTP: %w", err)
	}
	return nil
}
