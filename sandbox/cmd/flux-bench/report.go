package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// environment is what the figures were measured on.
type environment struct {
	objects, namespaces int
	seed                int64
	goVersion           string
	cpus                int
	cpuModel            string
	loaded              time.Duration
	flipped             string
	scrapes             int
	concurrent          int
	freshness           int
	ksmGzip             bool
}

// row is one line of the table: a figure for each target and their ratio,
// or, for a detail row, text without a ratio.
type row struct {
	label  string
	a, b   string
	ratio  string
	detail bool // a line of text, not a measured figure
}

func figure(label string, a, b float64, format func(float64) string) row {
	r := row{label: label, a: format(a), b: format(b), ratio: "-"}
	if b != 0 {
		r.ratio = fmt.Sprintf("%.2f", a/b)
	}
	return r
}

func text(label, a, b string) row { return row{label: label, a: a, b: b, detail: true} }

func ms(v float64) string { return fmt.Sprintf("%.1f ms", v) }

func secs(v float64) string { return fmt.Sprintf("%.2f s", v) }

func count(v float64) string { return fmt.Sprintf("%.0f", v) }

func micros(v float64) string { return fmt.Sprintf("%.3f µs", v) }

func mib(v float64) string { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }

// size picks the unit: response sizes run from KiB to hundreds of MiB.
func size(v float64) string {
	if v < 1<<20 {
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return mib(v)
}

func perObject(v float64) string { return fmt.Sprintf("%.0f B", v) }

func perObjectCount(v float64) string { return fmt.Sprintf("%.1f", v) }

func durMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rows turns two results into the table, flux_exporter first.
func rows(env environment, a, b *result) []row {
	out := []row{
		figure("first complete scrape after process start", a.startup.Seconds(), b.startup.Seconds(), secs),
		figure("samples per scrape", float64(a.samples), float64(b.samples), count),
		figure("samples per object (samples / objects; default families)", float64(a.samples)/float64(max(env.objects, 1)),
			float64(b.samples)/float64(max(env.objects, 1)), perObjectCount),
	}
	for _, enc := range []struct {
		name  string
		takes func(*result) []time.Duration
	}{{"gzip", func(r *result) []time.Duration { return r.gzip }}, {"plain", func(r *result) []time.Duration { return r.plain }}} {
		pa, pb := percentile(enc.takes(a), 50), percentile(enc.takes(b), 50)
		out = append(out,
			figure("scrape p50, "+enc.name, durMs(pa), durMs(pb), ms),
			figure("scrape p90, "+enc.name, durMs(percentile(enc.takes(a), 90)), durMs(percentile(enc.takes(b), 90)), ms),
			figure("cost per sample (p50 / samples), "+enc.name,
				float64(pa)/float64(time.Microsecond)/float64(max(a.samples, 1)),
				float64(pb)/float64(time.Microsecond)/float64(max(b.samples, 1)), micros),
		)
	}
	n := float64(env.objects)
	out = append(out,
		figure("response bytes, gzip", float64(a.gzipBytes), float64(b.gzipBytes), size),
		figure("response bytes, plain", float64(a.plainBytes), float64(b.plainBytes), size),
		figure("RSS after the sequential scrapes (VmRSS)", float64(a.after.RSS), float64(b.after.RSS), mib),
		figure("RSS per object (VmRSS / objects)", float64(a.after.RSS)/n, float64(b.after.RSS)/n, perObject),
		figure("lifetime peak RSS before the concurrent round (VmHWM)", float64(a.beforeRound.HWM), float64(b.beforeRound.HWM), mib),
		figure(fmt.Sprintf("lifetime peak RSS after %d concurrent scrapes (VmHWM)", env.concurrent), float64(a.afterRound.HWM), float64(b.afterRound.HWM), mib),
		figure(fmt.Sprintf("wall time of %d concurrent gzip scrapes", env.concurrent), durMs(a.roundWall), durMs(b.roundWall), ms),
	)
	for _, p := range []float64{50, 99} {
		label := fmt.Sprintf("freshness p%.0f (status write to first scrape showing it)", p)
		if a.freshErr != nil || b.freshErr != nil {
			out = append(out, text(label, freshText(a, p), freshText(b, p)))
			continue
		}
		out = append(out, figure(label, durMs(percentile(a.fresh, p)), durMs(percentile(b.fresh, p)), ms))
	}
	return out
}

func freshText(r *result, p float64) string {
	if r.freshErr != nil {
		return "not measured"
	}
	return ms(durMs(percentile(r.fresh, p)))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func printReport(w io.Writer, env environment, targets []*target, results []*result) {
	fmt.Fprintf(w, "\nflux-bench: %d Flux objects in %d namespaces (seed %d) on a CRD-mode API server, loaded in %s\n",
		env.objects, env.namespaces, env.seed, env.loaded.Round(time.Second))
	cpu := fmt.Sprintf("%d CPUs", env.cpus)
	if env.cpuModel != "" {
		cpu += " (" + env.cpuModel + ")"
	}
	fmt.Fprintf(w, "%s, %s; %d scrapes per encoding, %d concurrent, %d Ready flips of %s\n",
		env.goVersion, cpu, env.scrapes, env.concurrent, env.freshness, env.flipped)
	if !env.ksmGzip {
		fmt.Fprintln(w, "kube-state-metrics ran without --enable-gzip-encoding: its gzip figures are uncompressed answers")
	}
	for i, t := range targets {
		fmt.Fprintf(w, "%s: %s; answered %s, Content-Encoding %s when asked for gzip\n",
			t.name, strings.TrimPrefix(results[i].version, t.name+", "), results[i].contentType, orNone(results[i].gzipEncoding))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "figure\t%s\t%s\tratio\n", targets[0].name, targets[1].name)
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", dashes(6), dashes(len(targets[0].name)), dashes(len(targets[1].name)), dashes(5))
	for _, r := range rows(env, results[0], results[1]) {
		ratio := r.ratio
		if r.detail {
			ratio = ""
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.label, r.a, r.b, ratio)
	}
	_ = tw.Flush()
	for i, r := range results {
		if r.freshErr != nil {
			fmt.Fprintf(w, "\n%s freshness: %v\n", targets[i].name, r.freshErr)
		}
	}
	fmt.Fprintf(w, "\nratio is %s / %s. RSS per object is the whole process's VmRSS divided by the objects, not the caches alone.\n",
		targets[0].name, targets[1].name)
	fmt.Fprintln(w, "VmHWM is the peak over the process's life (including its start), so an unchanged value means the round did not exceed it.")
}

func dashes(n int) string { return strings.Repeat("-", n) }
