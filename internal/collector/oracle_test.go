package collector

import (
	"bytes"
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The oracle: tests hold the exposition writer (write.go) to client_golang
// by parsing a record's rendered series back into const metrics and
// encoding those with client_golang's encoders (sameAsCollected). Only
// tests take this path; scrapes copy the rendered bytes.

// metrics parses the record's rendered series back into metrics, for the
// oracle. It uses Prometheus's own text parser, so a
// rendering the parser would reject fails here, in every test that
// collects, rather than in a user's Prometheus.
func (rec *Record) metrics() ([]prometheus.Metric, error) {
	if len(rec.series) == 0 {
		return nil, nil
	}
	var text []byte
	start := uint32(0)
	last := -1
	for i, s := range rec.series {
		if int(s.family) != last {
			last = int(s.family)
			text = fmt.Appendf(text, "# TYPE %s %s\n", families[last].name, families[last].typ)
		}
		text = rec.appendSeries(text, i, start)
		text = appendFloat(text, s.value, textFloat)
		text = append(text, '\n')
		start = s.end
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("%s/%s: rendered series do not parse: %w", rec.Namespace, rec.Name, err)
	}
	var out []prometheus.Metric
	for _, s := range rec.series {
		f := families[s.family]
		mf := parsed[f.name]
		if mf == nil {
			continue
		}
		for _, m := range mf.GetMetric() {
			if f.dynamic {
				names := make([]string, len(m.GetLabel()))
				vals := make([]string, len(m.GetLabel()))
				for i, lp := range m.GetLabel() {
					names[i], vals[i] = lp.GetName(), lp.GetValue()
				}
				cm, err := dynamicMetric(f, prometheus.NewDesc(f.name, f.help, names, nil), m, vals)
				if err != nil {
					return nil, fmt.Errorf("%s/%s: %w", rec.Namespace, rec.Name, err)
				}
				out = append(out, cm)
				continue
			}
			if f.typ == histogramType {
				h, err := constHistogram(f, m)
				if err != nil {
					return nil, fmt.Errorf("%s/%s: %w", rec.Namespace, rec.Name, err)
				}
				out = append(out, h)
				continue
			}
			have := make(map[string]string, len(m.GetLabel()))
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			vals := make([]string, 0, len(objectLabels)+len(f.labels))
			for i := range len(objectLabels) + len(f.labels) {
				vals = append(vals, have[f.labelName(i)])
			}
			vt, v := prometheus.GaugeValue, m.GetGauge().GetValue()
			if f.typ == counterType {
				vt, v = prometheus.CounterValue, m.GetCounter().GetValue()
			}
			cm, err := prometheus.NewConstMetric(f.oracleDesc(), vt, v, vals...)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", rec.Namespace, rec.Name, err)
			}
			out = append(out, cm)
		}
		delete(parsed, f.name) // each family once
	}
	return out, nil
}

// dynamicMetric rebuilds a parsed series of a dynamic or aggregate
// family, whose labels are the series' own.
func dynamicMetric(f *family, desc *prometheus.Desc, m *dto.Metric, vals []string) (prometheus.Metric, error) {
	switch f.typ {
	case counterType:
		return prometheus.NewConstMetric(desc, prometheus.CounterValue, m.GetCounter().GetValue(), vals...)
	case histogramType:
		return histogramOf(desc, m, vals)
	}
	return prometheus.NewConstMetric(desc, prometheus.GaugeValue, m.GetGauge().GetValue(), vals...)
}

// constHistogram rebuilds a parsed per-object histogram series.
func constHistogram(f *family, m *dto.Metric) (prometheus.Metric, error) {
	have := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	vals := make([]string, len(objectLabels))
	for i := range objectLabels {
		vals[i] = have[objectLabels[i]]
	}
	return histogramOf(f.oracleDesc(), m, vals)
}

func histogramOf(desc *prometheus.Desc, m *dto.Metric, vals []string) (prometheus.Metric, error) {
	h := m.GetHistogram()
	buckets := make(map[float64]uint64, len(h.GetBucket()))
	for _, b := range h.GetBucket() {
		if !math.IsInf(b.GetUpperBound(), +1) {
			buckets[b.GetUpperBound()] = b.GetCumulativeCount()
		}
	}
	return prometheus.NewConstHistogram(desc, h.GetSampleCount(), h.GetSampleSum(), buckets, vals...)
}

// oracleDesc is the family's descriptor: the object labels, then its own.
func (f *family) oracleDesc() *prometheus.Desc {
	return prometheus.NewDesc(f.name, f.help, append(append([]string{}, objectLabels...), f.labels...), nil)
}
