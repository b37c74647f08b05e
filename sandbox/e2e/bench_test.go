package e2e

import (
	"bufio"
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/flux-exporter/flux_exporter/internal/collector"
	"github.com/flux-exporter/flux_exporter/internal/kube"
	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

const benchObjects = 10000

// benchFleet is one API server with 10,000 fleet objects, shared by the
// benchmarks because loading it takes tens of seconds.
var benchFleet struct {
	once sync.Once
	c    *cluster
	err  error
}

func loadBenchFleet(b *testing.B) *cluster {
	benchFleet.once.Do(func() {
		srv, err := apiserver.Start(context.Background(), apiserver.Options{})
		if err != nil {
			benchFleet.err = err
			return
		}
		if err := srv.InstallFluxCRDs(context.Background()); err != nil {
			benchFleet.err = err
			return
		}
		f, err := fleet.Generate(fleet.Options{Seed: 42, Objects: benchObjects, Namespaces: 20})
		if err != nil {
			benchFleet.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := fleet.Apply(ctx, srv.RESTConfig(), f); err != nil {
			benchFleet.err = err
			return
		}
		c := newClusterFrom(b, srv)
		benchFleet.c = c
	})
	if benchFleet.err != nil {
		b.Fatal(benchFleet.err)
	}
	return benchFleet.c
}

// BenchmarkScrape measures what one scrape of the resources collector costs
// inside the process over 10,000 compact records held by the exporter's real
// informers, by the path the HTTP handler takes: the collector (kind-level
// and self series) gathered, then the per-object series copied from their
// rendered bytes in the text format. It reports the heap those records
// retain per object, and the series and bytes of a scrape. HTTP, gzip and
// the side-by-side with kube-state-metrics are `make bench`'s
// (sandbox/cmd/flux-bench).
func BenchmarkScrape(b *testing.B) {
	c := loadBenchFleet(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	before := heapAfterGC()
	dec := collector.NewDecoder(collector.DecoderOptions{})
	w, err := kube.NewWatcher(c.srv.RESTConfig(), kube.WatcherOptions[*collector.Record]{Transform: dec.Decode})
	if err != nil {
		b.Fatal(err)
	}
	go w.Run(ctx)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ok, _ := w.Ready()
		if ok && countObjects(w) == benchObjects {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("cache holds %d of %d objects after 2m", countObjects(w), benchObjects)
		}
		time.Sleep(100 * time.Millisecond)
	}
	retained := heapAfterGC() - before

	exp, err := collector.New(collector.Deps{Flux: w, Decoder: dec}, collector.DefaultSelection())
	if err != nil {
		b.Fatal(err)
	}
	var out countingWriter
	bw := bufio.NewWriterSize(&out, 64<<10)
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	var lines int
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		out = countingWriter{}
		c, write := exp.Scrape(ctx)
		reg := prometheus.NewRegistry()
		if err := reg.Register(c); err != nil {
			b.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		enc := expfmt.NewEncoder(bw, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
		}
		if err := write(bw, format); err != nil {
			b.Fatal(err)
		}
		if err := bw.Flush(); err != nil {
			b.Fatal(err)
		}
		lines = out.samples
	}
	b.StopTimer()
	if lines < benchObjects {
		b.Fatalf("a scrape wrote %d samples for %d objects", lines, benchObjects)
	}
	b.ReportMetric(float64(retained)/benchObjects, "retained-B/object")
	b.ReportMetric(float64(lines), "samples/scrape")
	b.ReportMetric(float64(out.n), "bytes/scrape")
	runtime.KeepAlive(w)
}

// countingWriter counts the bytes and the sample lines (those not starting
// with #) written to it.
type countingWriter struct {
	n, samples int
	midLine    bool
}

func (c *countingWriter) Write(p []byte) (int, error) {
	for _, ch := range p {
		if !c.midLine && ch != '#' {
			c.samples++
		}
		c.midLine = ch != '\n'
	}
	c.n += len(p)
	return len(p), nil
}

// heapAfterGC is the live heap once garbage is collected. The in-process
// API server shares the heap, so the benchmark loads the fleet first and
// measures only the difference the exporter's caches make.
func heapAfterGC() int64 {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
