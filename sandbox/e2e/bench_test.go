package e2e

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-exporter/flux_exporter/collector"
	"github.com/flux-exporter/flux_exporter/kube"
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

// BenchmarkCollect measures one full scrape of the resources collector over
// 10,000 compact records held by the exporter's real informers, and the heap
// those records retain per object.
func BenchmarkCollect(b *testing.B) {
	c := loadBenchFleet(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	before := heapAfterGC()
	w, err := kube.NewWatcher(c.srv.RESTConfig(), kube.WatcherOptions{Transform: collector.Decode})
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

	exp, err := collector.New(collector.Deps{Flux: w})
	if err != nil {
		b.Fatal(err)
	}
	scrape := exp.Scrape(ctx)
	series := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ch := make(chan prometheus.Metric, 1024)
		done := make(chan int)
		go func() {
			n := 0
			for range ch {
				n++
			}
			done <- n
		}()
		scrape.Collect(ch)
		close(ch)
		series = <-done
	}
	b.StopTimer()
	b.ReportMetric(float64(retained)/benchObjects, "retained-B/object")
	b.ReportMetric(float64(series), "series/scrape")
	runtime.KeepAlive(w)
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
