package collector

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// Record is the compact form of a Flux object that the informer cache
// keeps instead of the object: its per-object series, rendered once when
// the object arrives. A scrape copies the rendered bytes out
// (writeObjects).
type Record struct {
	Namespace, Name string
	// object is the object labels as every shared family's series starts
	// with them (family.shared), kept once.
	object []byte
	// buf holds what each series adds to them (family.appendSeries), one
	// after another; series[i] ends at series[i].end.
	buf    []byte
	series []sample
	// refs, ready and hasArtifact are what the dependency graph reads of
	// the object (readRefs, graph.go); graphDigest hashes them with the
	// object's kind, namespace and name, so that a graph is recomputed only
	// when one of them changes, not on every status update.
	refs        []ref
	ready       bool
	hasArtifact bool
	// chartUsable is whether helm-controller would take a chart from it
	// (needChart).
	chartUsable bool
	graphDigest uint64
	// delivery holds the object's delivery series (delivery.go), rendered
	// apart since they change without the object changing.
	delivery *deliveryEntry
	// uid hashes metadata.uid, and notReadySince is what
	// notReadySinceFamily exports when notReady: the next record of the
	// same object carries the start of a failure over (lifecycle.go).
	uid           uint64
	notReadySince float64
	notReady      bool
}

// appendSeries appends series i, whose bytes in buf start at start, as an
// exposition line without its value: `name{labels} `.
func (rec *Record) appendSeries(dst []byte, i int, start uint32) []byte {
	s := rec.series[i]
	f := families[s.family]
	if f.shared {
		dst = append(dst, f.open...)
		dst = append(dst, rec.object...)
	}
	return append(dst, rec.buf[start:s.end]...)
}

// sample is one rendered series: its family, where its name and labels end
// in the record's buf, and its value.
type sample struct {
	family uint16
	end    uint32
	value  float64
}

// GetObjectMeta gives the informer cache its namespace/name key.
func (r *Record) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name}
}

// addObject renders the series every kind has (flux_resource_info, its
// conditions, references) and the kind's own gauges and info families, and
// returns the object's readiness as flux get prints it.
func (w *recordWriter) addObject(k kube.Kind, spec *kindSpec, conds []condition) (ready string) {
	r := w.r
	ready, reason := readiness(spec, r, conds)
	suspended := r.suspended(spec.suspend)
	w.derived = [...]string{readyLabel: ready, reasonLabel: reason, suspendedLabel: conditionBool(suspended)}
	info := resourceInfo{uid: r.str("metadata", "uid"), ready: ready, reason: reason, suspended: conditionBool(suspended),
		revision: r.label(spec.revision), sourceName: r.label(spec.sourceName), url: redactURL(r.label(spec.url)),
		ref: r.label(spec.ref), path: r.label(spec.path)}
	w.add(resourceInfoFamily, 1, info.values()...)
	w.add(suspendedFamily, boolValue(suspended))
	if gen, ok := r.num("metadata", "generation"); ok {
		if observed, behind := unobservedGeneration(ready, conds, gen); behind {
			w.add(unobservedGenerationFamily, gen, observed)
		}
	}
	w.readRefs(k.Kind, ready, conds)
	if rev := r.str("status", "lastAttemptedRevision"); rev != "" {
		w.add(attemptedRevisionFamily, 1, rev)
	}
	for _, c := range conds {
		w.add(conditionFamily, 1, c.typ, c.status, c.reason)
		if c.hasTransition {
			w.add(conditionTransitionFamily, c.lastTransition, c.typ)
		}
		if c.hasGeneration {
			w.add(conditionGenerationFamily, c.observedGeneration, c.typ)
		}
	}
	for _, g := range spec.gauges {
		if v, ok := r.value(pathOf(g.from), g.read); ok {
			w.add(g.family, v)
		}
	}
	for _, in := range spec.infos {
		if _, ok := r.lookup(pathOf(in.when)); !ok {
			continue
		}
		vals := make([]string, len(in.labels))
		for i, l := range in.labels {
			vals[i] = w.label(l.from)
		}
		w.add(in.family, 1, vals...)
	}
	return ready
}

// groupByFamily puts the series in family order, buf with them, so that a
// scrape writing family by family finds each record's series of a family
// together. It also drops the spare capacity rendering left behind.
func (rec *Record) groupByFamily() {
	if slices.IsSortedFunc(rec.series, func(a, b sample) int { return int(a.family) - int(b.family) }) {
		rec.buf, rec.series = slices.Clip(rec.buf), slices.Clip(rec.series)
		return
	}
	type span struct {
		sample
		start uint32
	}
	spans := make([]span, len(rec.series))
	start := uint32(0)
	for i, s := range rec.series {
		spans[i] = span{s, start}
		start = s.end
	}
	slices.SortStableFunc(spans, func(a, b span) int { return int(a.family) - int(b.family) })
	buf := make([]byte, 0, len(rec.buf))
	series := make([]sample, len(spans))
	for i, sp := range spans {
		buf = append(buf, rec.buf[sp.start:sp.end]...)
		series[i] = sample{family: sp.family, end: uint32(len(buf)), value: sp.value}
	}
	rec.buf, rec.series = buf, series
}

// recordWriter renders series into a record.
type recordWriter struct {
	rec *Record
	r   *reader
	// on is the families to render (Decoder.on).
	on     familySet
	object []string // the object label values
	values []string
	// derived holds flux_resource_info's worked-out labels, by
	// derivedLabel, for the info families that repeat them.
	derived [suspendedLabel + 1]string
}

// label reads an info family's label: from the object, or as
// flux_resource_info has it.
func (w *recordWriter) label(s labelSource) string {
	if s.derived != notDerived {
		return w.derived[s.derived]
	}
	return w.r.label(s)
}

func (w *recordWriter) add(f *family, v float64, extra ...string) {
	if !w.on.has(f) {
		return
	}
	w.values = append(append(w.values[:0], w.object...), extra...)
	start := len(w.rec.buf)
	buf, err := f.appendSeries(w.rec.buf, w.values)
	w.keep(f, v, start, buf, err)
}

// addLabeled renders a series of a dynamic family (appendLabeled).
func (w *recordWriter) addLabeled(f *family, v float64, pairs []labelPair) {
	if !w.on.has(f) {
		return
	}
	start := len(w.rec.buf)
	buf, err := f.appendLabeled(w.rec.buf, pairs)
	w.keep(f, v, start, buf, err)
}

// keep records the series rendered into buf from start, or drops what was
// rendered and counts the fault when rendering failed.
func (w *recordWriter) keep(f *family, v float64, start int, buf []byte, err error) {
	if err != nil {
		w.rec.buf = buf[:start]
		w.r.fail([]any{f.name}, err)
		return
	}
	w.rec.buf = buf
	if len(buf) > 1<<32-1 {
		panic("collector: record larger than 4 GiB") // no Kubernetes object is
	}
	w.rec.series = append(w.rec.series, sample{family: uint16(f.id), end: uint32(len(buf)), value: v})
}

// readiness is the READY column of flux get (v2.9.5, cmd/flux/get.go
// statusAndMessage and the Alert, Provider and HelmRepository listers):
// True for objects their controller never gives a status, the Ready
// condition's status and reason when there is one, else False, which flux
// get explains as "waiting to be reconciled".
func readiness(spec *kindSpec, r *reader, conds []condition) (status, reason string) {
	if r.static(spec.static) {
		return "True", ""
	}
	for _, c := range conds {
		if c.typ == "Ready" {
			return c.status, c.reason
		}
	}
	return "False", ""
}

// unobservedGenerationFamily is flux_resource_generation and Ready's
// observedGeneration compared in the exporter, so that the default set
// carries one series only for the objects that need it.
var unobservedGenerationFamily = perObject("resource_unobserved_generation",
	"The object's metadata.generation while no controller has acted on it: Ready's observedGeneration (its observed_generation label) is below it, or the object has no Ready condition and flux get reports it not ready (observed_generation=\"\"). Every reconcile attempt rewrites Ready, failed ones included, so a failing spec change does not show here. Absent otherwise.",
	"observed_generation")

// unobservedGeneration says whether no controller has acted on generation
// yet (docs/flux-semantics.md, rule 2), and the generation Ready was last
// written for ("" when there is no Ready). fluxcd/pkg runtime
// conditions.Set stamps metadata.generation on every condition it writes,
// and every controller rewrites Ready on each attempt that is not
// suspended, so a Ready observedGeneration below generation means no
// attempt has started since the spec changed. An object without Ready is
// never reconciled unless flux get calls it ready: the kinds without
// status (rule 1). A Ready without observedGeneration says nothing.
func unobservedGeneration(ready string, conds []condition, generation float64) (observed string, behind bool) {
	for _, c := range conds {
		if c.typ != "Ready" {
			continue
		}
		if !c.hasGeneration || c.observedGeneration >= generation {
			return "", false
		}
		return strconv.FormatFloat(c.observedGeneration, 'f', -1, 64), true
	}
	return "", ready == "False"
}

type condition struct {
	typ, status, reason string
	lastTransition      float64
	hasTransition       bool
	observedGeneration  float64
	hasGeneration       bool
}

// conditions reads status.conditions; malformed entries are skipped and
// counted, the rest are kept.
func (r *reader) conditions() []condition {
	v, ok := r.lookup([]any{"status", "conditions"})
	if !ok {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		r.wrongType([]any{"status", "conditions"}, "list", v)
		return nil
	}
	out := make([]condition, 0, len(list))
	for i := range list {
		if _, ok := list[i].(map[string]any); !ok {
			r.wrongType([]any{"status", "conditions", i}, "object", list[i])
			continue
		}
		at := func(k string) []any { return []any{"status", "conditions", i, k} }
		c := condition{typ: r.str(at("type")...), status: r.str(at("status")...), reason: r.str(at("reason")...)}
		if c.typ == "" {
			r.fail([]any{"status", "conditions", i}, errors.New("no type"))
			continue
		}
		if slices.ContainsFunc(out, func(o condition) bool { return o.typ == c.typ }) {
			// Two series with one label set would make the scrape invalid.
			r.fail([]any{"status", "conditions", i}, fmt.Errorf("duplicate type %q", c.typ))
			continue
		}
		if c.status == "" {
			c.status = "Unknown"
		}
		c.lastTransition, c.hasTransition = r.timestamp(at("lastTransitionTime")...)
		c.observedGeneration, c.hasGeneration = r.num(at("observedGeneration")...)
		out = append(out, c)
	}
	return out
}
