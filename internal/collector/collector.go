// Package collector turns the exporter's caches into Prometheus metrics.
// Collectors register by name, get a --[no-]collector.<name> flag, and are
// timed and isolated so that one failing collector never fails a scrape.
package collector

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
	"github.com/flux-exporter/flux_exporter/internal/controllers"
	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// Collector is one named source of metrics. Update runs on every scrape;
// ctx carries the scrape's deadline.
type Collector interface {
	Update(ctx context.Context, ch chan<- prometheus.Metric) error
}

// Factory builds a collector from the exporter's shared dependencies.
type Factory func(d Deps) (Collector, error)

type registration struct {
	factory        Factory
	defaultEnabled bool
}

// registry holds the collectors the package's files register at init; it
// is read-only afterwards. Which of them run is a Selection, a value.
var registry = map[string]registration{}

var (
	scrapeDurationDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "collector_duration_seconds"), Type: catalog.Gauge,
		Help:   "Time the collector took on this scrape, in seconds.",
		Labels: []string{"collector"}})
	scrapeSuccessDesc = declared.Declare(catalog.Family{Name: prometheus.BuildFQName(catalog.Namespace, "exporter", "collector_success"), Type: catalog.Gauge,
		Help:   "Whether the collector succeeded on this scrape (1) or failed (0).",
		Labels: []string{"collector"}})
)

// declared holds the families the collectors emit that are not per
// object; the per-object ones are in families (family.go).
var declared catalog.List

// Families lists every family any collector may emit, sorted by name.
func Families() []catalog.Family {
	out := append(declared.Families(), controllers.Families()...)
	for _, f := range families {
		out = append(out, f.catalogued())
	}
	slices.SortFunc(out, func(a, b catalog.Family) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Descs lists the descriptor of every family any collector may emit.
func Descs() []*prometheus.Desc {
	fs := Families()
	out := make([]*prometheus.Desc, len(fs))
	for i, f := range fs {
		out[i] = f.Desc()
	}
	return out
}

// register adds a collector under name; each collector file calls it from
// init, so adding a collector touches nothing else.
func register(name string, defaultEnabled bool, f Factory) {
	if _, dup := registry[name]; dup {
		panic("collector: duplicate registration of " + name) // programming error at init
	}
	registry[name] = registration{factory: f, defaultEnabled: defaultEnabled}
}

// Selection is which collectors run, by name: the --[no-]collector.<name>
// flags once parsed.
type Selection map[string]*bool

// DefaultSelection runs the collectors that are on by default.
func DefaultSelection() Selection {
	s := Selection{}
	for name, r := range registry {
		on := r.defaultEnabled
		s[name] = &on
	}
	return s
}

// RegisterFlags adds a --[no-]collector.<name> flag per collector, in name
// order so that --help reads the same every time, and returns the
// Selection they set when the command line is parsed.
func RegisterFlags(app *kingpin.Application) Selection {
	s := DefaultSelection()
	for _, name := range Names() {
		def := "disabled"
		if *s[name] {
			def = "enabled"
		}
		app.Flag("collector."+name, fmt.Sprintf("Enable the %s collector (default: %s).", name, def)).
			Default(fmt.Sprint(*s[name])).BoolVar(s[name])
	}
	return s
}

// Names lists the registered collectors, sorted.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Disable switches the named collector off, whatever its flag says, for a
// replica on which it has nothing to report; call it before New.
func (s Selection) Disable(name string) {
	if on, ok := s[name]; ok {
		*on = false
	}
}

// Enabled reports whether the named collector is switched on.
func (s Selection) Enabled(name string) bool {
	on, ok := s[name]
	return ok && *on
}

// Exporter runs the enabled collectors concurrently on each scrape.
type Exporter struct {
	collectors map[string]Collector
	logger     *slog.Logger
}

// New builds every collector sel enables.
func New(d Deps, sel Selection) (*Exporter, error) {
	e := &Exporter{collectors: map[string]Collector{}, logger: d.logger()}
	for _, name := range Names() {
		if !sel.Enabled(name) {
			continue
		}
		c, err := registry[name].factory(d)
		if err != nil {
			return nil, fmt.Errorf("collector %s: %w", name, err)
		}
		e.collectors[name] = c
	}
	return e, nil
}

// ObjectWriter writes the per-object families of a scrape in an exposition
// format, as client_golang's encoders would; it reports formats it cannot
// write with ErrFormat.
type ObjectWriter func(w *bufio.Writer, format expfmt.Format) error

// ErrFormat is the error of an ObjectWriter asked for a format other than
// the text format or OpenMetrics.
var ErrFormat = errors.New("per-object series are written only in the text format and OpenMetrics")

// Scrape is one scrape, bound to its context so that collectors that fetch
// over the network honour the scraper's deadline. The collector c sends
// every series but the per-object ones; write, called once c has been
// gathered, writes those from the same snapshot of the caches by copying
// the records' rendered bytes (no metric objects, no sorting, no
// encoding). This is the only way series leave the exporter.
func (e *Exporter) Scrape(ctx context.Context) (c prometheus.Collector, write ObjectWriter) {
	st := &scrapeState{}
	write = func(w *bufio.Writer, format expfmt.Format) error {
		style, ok := styleOf(format)
		if !ok {
			return fmt.Errorf("%w, not %s", ErrFormat, format)
		}
		return writeObjects(w, st.records(), style)
	}
	return &scrape{e: e, ctx: context.WithValue(ctx, scrapeKey{}, st)}, write
}

// scrapeState is what the collectors of one scrape share: the caches' state,
// read once, so that the kind-level counts and the per-object series agree.
type scrapeState struct {
	once   sync.Once
	states []kube.KindState[*Record]
	// graph are the dependency graph's records (graph.go), and groups the
	// delivery groups' (delivery_groups.go), set by the resources
	// collector.
	graph, groups []*Record
}

type scrapeKey struct{}

// scrapeOf returns the scrape a collector runs in; a collector called
// outside one gets a scrape of its own.
func scrapeOf(ctx context.Context) *scrapeState {
	if st, ok := ctx.Value(scrapeKey{}).(*scrapeState); ok {
		return st
	}
	return &scrapeState{}
}

// objects reads the caches' state the first time it is asked.
func (s *scrapeState) objects(src FluxState) []kube.KindState[*Record] {
	s.once.Do(func() {
		s.states = src.State()
	})
	return s.states
}

// records are the records the scrape read, none if no collector read them.
func (s *scrapeState) records() []*Record {
	var out []*Record
	s.once.Do(func() {}) // a scrape whose resources collector is off
	for _, ks := range s.states {
		for _, rec := range ks.Records {
			out = append(out, rec)
			if d := rec.delivery.record(); d != nil {
				out = append(out, d)
			}
		}
	}
	return append(append(out, s.graph...), s.groups...)
}

type scrape struct {
	e   *Exporter
	ctx context.Context
}

var _ prometheus.Collector = (*scrape)(nil)

// Describe sends nothing: the metric set depends on the cluster, so the
// registry treats this as an unchecked collector.
func (s *scrape) Describe(chan<- *prometheus.Desc) {}

func (s *scrape) Collect(ch chan<- prometheus.Metric) {
	var wg sync.WaitGroup
	for name, c := range s.e.collectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.e.run(s.ctx, name, c, ch)
		}()
	}
	wg.Wait()
}

func (e *Exporter) run(ctx context.Context, name string, c Collector, ch chan<- prometheus.Metric) {
	start := time.Now()
	err := safeUpdate(ctx, c, ch)
	success := 1.0
	if err != nil {
		success = 0
		e.logger.Error("Collector failed", "collector", name, "duration_seconds", time.Since(start).Seconds(), "err", err)
	}
	ch <- prometheus.MustNewConstMetric(scrapeDurationDesc, prometheus.GaugeValue, time.Since(start).Seconds(), name)
	ch <- prometheus.MustNewConstMetric(scrapeSuccessDesc, prometheus.GaugeValue, success, name)
}

// safeUpdate turns a panic into an error: a bug in one collector must cost
// that collector's series, not the process or the other collectors.
func safeUpdate(ctx context.Context, c Collector, ch chan<- prometheus.Metric) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return c.Update(ctx, ch)
}
