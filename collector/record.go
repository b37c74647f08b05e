package collector

import (
	"errors"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flux-exporter/flux_exporter/kube"
)

// Record is the compact, kind-neutral form of a Flux object that the
// informer cache keeps instead of the object. Every label value and number
// is computed once, when the object arrives, so a scrape only copies them
// out.
type Record struct {
	Namespace, Name string
	// info holds flux_resource_info's label values after the object labels.
	info              []string
	attemptedRevision string
	conditions        []condition
	// values is aligned with spec.gauges; absent slots are NaN.
	values []float64
	// infos is aligned with spec.infos; a nil entry has no series.
	infos [][]string
	spec  *kindSpec
}

type condition struct {
	typ, status, reason string
	lastTransition      float64 // NaN when absent
	observedGeneration  float64 // NaN when absent
}

// GetObjectMeta gives the informer cache its namespace/name key.
func (r *Record) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name}
}

// Decode is the informer transform: it reduces an object to a Record and
// returns the faults it met. A faulty field costs only that field.
func Decode(k kube.Kind, u *unstructured.Unstructured) (metav1.ObjectMetaAccessor, []error) {
	r := &reader{obj: u.Object}
	spec := specFor(k.Kind)
	rec := &Record{
		Namespace:         r.str("metadata", "namespace"),
		Name:              r.str("metadata", "name"),
		attemptedRevision: r.str("status", "lastAttemptedRevision"),
		conditions:        r.conditions(),
		spec:              spec,
	}
	ready, reason := readiness(spec, r, rec.conditions)
	suspended, _ := r.boolean("spec", "suspend")
	rec.info = []string{r.str("metadata", "uid"), ready, reason, conditionBool(suspended),
		spec.revision(r), spec.sourceName(r), redactURL(spec.url(r)), spec.ref(r), spec.path(r)}

	rec.values = make([]float64, len(spec.gauges))
	for i, g := range spec.gauges {
		v, ok := g.value(r)
		if !ok {
			v = absent
		}
		rec.values[i] = v
	}
	if len(spec.infos) > 0 {
		rec.infos = make([][]string, len(spec.infos))
		for i, in := range spec.infos {
			if _, ok := r.lookup(in.when); !ok {
				continue
			}
			vals := make([]string, len(in.fields))
			for j, f := range in.fields {
				vals[j] = f(r)
			}
			rec.infos[i] = vals
		}
	}
	return rec, r.errs
}

// readiness is the READY column of flux get (v2.9.5, cmd/flux/get.go
// statusAndMessage and the Alert, Provider and HelmRepository listers):
// True for objects their controller never gives a status, the Ready
// condition's status and reason when there is one, else False, which flux
// get explains as "waiting to be reconciled".
func readiness(spec *kindSpec, r *reader, conds []condition) (status, reason string) {
	if spec.static(r) {
		return "True", ""
	}
	for _, c := range conds {
		if c.typ == "Ready" {
			return c.status, c.reason
		}
	}
	return "False", ""
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
			// Two series with one label set would fail the whole scrape.
			r.fail([]any{"status", "conditions", i}, fmt.Errorf("duplicate type %q", c.typ))
			continue
		}
		if c.status == "" {
			c.status = "Unknown"
		}
		c.lastTransition, c.observedGeneration = absent, absent
		if t, ok := r.timestamp(at("lastTransitionTime")...); ok {
			c.lastTransition = t
		}
		if g, ok := r.num(at("observedGeneration")...); ok {
			c.observedGeneration = g
		}
		out = append(out, c)
	}
	return out
}

// emit writes the record's series. It returns the first error met but
// emits everything it can.
func (rec *Record) emit(kind string, ch chan<- prometheus.Metric) error {
	var first error
	send := func(desc *prometheus.Desc, v float64, extra ...string) {
		lv := make([]string, 0, 3+len(extra))
		lv = append(lv, kind, rec.Name, rec.Namespace)
		lv = append(lv, extra...)
		m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, v, lv...)
		if err != nil {
			if first == nil {
				first = fmt.Errorf("%s %s/%s: %w", kind, rec.Namespace, rec.Name, err)
			}
			return
		}
		ch <- m
	}
	send(resourceInfoDesc, 1, rec.info...)
	if rec.attemptedRevision != "" {
		send(attemptedRevisionDesc, 1, rec.attemptedRevision)
	}
	for _, c := range rec.conditions {
		send(conditionDesc, 1, c.typ, c.status, c.reason)
		if !isAbsent(c.lastTransition) {
			send(conditionTransitionDesc, c.lastTransition, c.typ)
		}
		if !isAbsent(c.observedGeneration) {
			send(conditionGenerationDesc, c.observedGeneration, c.typ)
		}
	}
	for i, g := range rec.spec.gauges {
		if !isAbsent(rec.values[i]) {
			send(g.desc, rec.values[i])
		}
	}
	for i, in := range rec.spec.infos {
		if rec.infos[i] != nil {
			send(in.desc, 1, rec.infos[i]...)
		}
	}
	return first
}
