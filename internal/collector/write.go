package collector

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
	"github.com/prometheus/common/expfmt"
)

// floatStyle is how an exposition format spells a sample value.
type floatStyle int

const (
	// textFloat is the text format's spelling, as client_golang writes it:
	// the shortest decimal that reads back exactly.
	textFloat floatStyle = iota
	// openMetricsFloat is OpenMetrics', as client_golang writes it: the
	// same, with ".0" after integers.
	openMetricsFloat
)

func appendFloat(buf []byte, v float64, style floatStyle) []byte {
	switch {
	case math.IsNaN(v):
		return append(buf, "NaN"...)
	case math.IsInf(v, +1):
		return append(buf, "+Inf"...)
	case math.IsInf(v, -1):
		return append(buf, "-Inf"...)
	}
	start := len(buf)
	buf = strconv.AppendFloat(buf, v, 'g', -1, 64)
	if style == openMetricsFloat && !bytes.ContainsAny(buf[start:], "e.") {
		buf = append(buf, '.', '0')
	}
	return buf
}

// headers are each family's HELP and TYPE lines, per float style, built
// once the families are sorted (see family.go's init).
var headers [2][][]byte

func buildHeaders() {
	for style, escapeHelp := range []func(string) string{escapeTextHelp, escapeOpenMetricsHelp} {
		headers[style] = make([][]byte, len(families))
		for i, f := range families {
			name := f.name
			if style == int(openMetricsFloat) && f.typ == counterType {
				// OpenMetrics names a counter family without the _total
				// its samples carry, as client_golang writes it.
				name = strings.TrimSuffix(name, "_total")
			}
			headers[style][i] = fmt.Appendf(nil, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(f.help), name, f.typ)
		}
	}
}

var (
	textHelpEscaper        = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	openMetricsHelpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeTextHelp(s string) string        { return textHelpEscaper.Replace(s) }
func escapeOpenMetricsHelp(s string) string { return openMetricsHelpEscaper.Replace(s) }

// styleOf tells how format spells values; ok is false for formats the
// prebuilt series cannot be written in (protobuf).
func styleOf(format expfmt.Format) (floatStyle, bool) {
	switch format.FormatType() {
	case expfmt.TypeTextPlain:
		return textFloat, true
	case expfmt.TypeOpenMetrics:
		return openMetricsFloat, true
	}
	return 0, false
}

// writeObjects writes the per-object families of the records: each family
// once, its HELP and TYPE lines and then every record's series of it, in
// the style of the format. Families without series are left out, as
// client_golang leaves them out.
func writeObjects(w *bufio.Writer, records []*Record, style floatStyle) error {
	// Family by family, every record is visited once per family. The
	// cursors keep what that visit needs in one array, read in order,
	// so that records without a series of the family cost no pointer chase.
	type cursor struct {
		rec   *Record
		next  int    // the first series not yet written
		fam   int    // its family, or -1 when all are written
		start uint32 // where its name and labels begin in rec.buf
	}
	cursors := make([]cursor, 0, len(records))
	for _, rec := range records {
		if len(rec.series) > 0 {
			cursors = append(cursors, cursor{rec: rec, fam: int(rec.series[0].family)})
		}
	}
	var line []byte
	for fam := range families {
		header := false
		for i := range cursors {
			c := &cursors[i]
			if c.fam != fam {
				continue
			}
			if !header {
				header = true
				if _, err := w.Write(headers[style][fam]); err != nil {
					return err
				}
			}
			for c.fam == fam {
				s := c.rec.series[c.next]
				line = c.rec.appendSeries(line[:0], c.next, c.start)
				valueStyle := style
				if style == openMetricsFloat && families[fam].typ == histogramType {
					// OpenMetrics writes bucket and _count values as the
					// integers they are, and only _sum as a float.
					line = openMetricsBound(line)
					if !bytes.Contains(line, []byte("_sum{")) {
						valueStyle = textFloat
					}
				}
				line = appendFloat(line, s.value, valueStyle)
				line = append(line, '\n')
				if _, err := w.Write(line); err != nil {
					return err
				}
				c.start = s.end
				c.next++
				c.fam = -1
				if c.next < len(c.rec.series) {
					c.fam = int(c.rec.series[c.next].family)
				}
			}
		}
	}
	return nil
}

// openMetricsBound rewrites the le label that ends a rendered bucket
// series, `...,le="300"} `, as OpenMetrics spells a bound: "300.0".
// Records keep the text format's spelling, shared by both formats.
func openMetricsBound(line []byte) []byte {
	const tail = `"} `
	if !bytes.HasSuffix(line, []byte(tail)) {
		return line
	}
	start := bytes.LastIndex(line, []byte(`le="`))
	if start < 0 {
		return line // _sum and _count have no le
	}
	bound := line[start+len(`le="`) : len(line)-len(tail)]
	if bytes.ContainsAny(bound, "e.") || bytes.Contains(bound, []byte("Inf")) || bytes.Contains(bound, []byte("NaN")) {
		return line
	}
	line = append(line[:len(line)-len(tail)], ".0"...)
	return append(line, tail...)
}

// MetricFilter selects metric families by name, as kube-state-metrics'
// --metric-allowlist, --metric-denylist and --metric-opt-in-list do: each
// entry is a regular expression matched anywhere in the name (anchor it
// with ^ and $ to match the whole name).
type MetricFilter struct {
	list  []*regexp.Regexp
	allow bool
	optIn []*regexp.Regexp
}

// NewMetricFilter builds a filter from an allowlist or a denylist, and the
// opt-in list that turns on families that are off by default. Setting both
// the allowlist and the denylist is an error, as is an entry that is not a
// regular expression. With neither, every family that is not opt-in is
// included.
func NewMetricFilter(allow, deny, optIn []string) (*MetricFilter, error) {
	if len(allow) > 0 && len(deny) > 0 {
		return nil, fmt.Errorf("--metric-allowlist and --metric-denylist are mutually exclusive; set only one")
	}
	f := &MetricFilter{allow: len(allow) > 0}
	entries, flag := deny, "--metric-denylist"
	if f.allow {
		entries, flag = allow, "--metric-allowlist"
	}
	var err error
	if f.list, err = compileAll(flag, entries); err != nil {
		return nil, err
	}
	if f.optIn, err = compileAll("--metric-opt-in-list", optIn); err != nil {
		return nil, err
	}
	return f, nil
}

func compileAll(flag string, entries []string) ([]*regexp.Regexp, error) {
	var out []*regexp.Regexp
	for _, e := range entries {
		re, err := regexp.Compile(e)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a regular expression: %w", flag, e, err)
		}
		out = append(out, re)
	}
	return out, nil
}

// Exports tells whether family f is exported: the allowlist or denylist
// includes it and, when it is opt-in, the opt-in list names it. A nil
// filter exports every family that is not opt-in.
func (f *MetricFilter) Exports(fam catalog.Family) bool {
	if !f.Includes(fam.Name) {
		return false
	}
	if !fam.OptIn {
		return true
	}
	return f != nil && slices.ContainsFunc(f.optIn, func(re *regexp.Regexp) bool { return re.MatchString(fam.Name) })
}

// Warnings says, one line each, which entries of the lists turn nothing on
// among fams: an opt-in entry that matches no opt-in family (a typo, or a
// family that is on by default), one whose families the allowlist or
// denylist leaves out, and an allowlist entry that matches only opt-in
// families the opt-in list does not name.
func (f *MetricFilter) Warnings(fams []catalog.Family) []string {
	if f == nil {
		return nil
	}
	var optIn []string
	for _, fam := range fams {
		if fam.OptIn {
			optIn = append(optIn, fam.Name)
		}
	}
	matching := func(re *regexp.Regexp, keep func(catalog.Family) bool) []catalog.Family {
		var out []catalog.Family
		for _, fam := range fams {
			if re.MatchString(fam.Name) && keep(fam) {
				out = append(out, fam)
			}
		}
		return out
	}
	var out []string
	for _, re := range f.optIn {
		matched := matching(re, func(fam catalog.Family) bool { return fam.OptIn })
		switch {
		case len(matched) == 0:
			out = append(out, fmt.Sprintf("--metric-opt-in-list: %q matches no opt-in family; the opt-in families are %s", re, strings.Join(optIn, ", ")))
		case !slices.ContainsFunc(matched, f.Exports):
			out = append(out, fmt.Sprintf("--metric-opt-in-list: %q turns on only families that --metric-allowlist or --metric-denylist leaves out", re))
		}
	}
	if f.allow {
		for _, re := range f.list {
			matched := matching(re, func(catalog.Family) bool { return true })
			if len(matched) > 0 && !slices.ContainsFunc(matched, f.Exports) {
				out = append(out, fmt.Sprintf("--metric-allowlist: %q matches only opt-in families; name them in --metric-opt-in-list too", re))
			}
		}
	}
	return out
}

// Includes tells whether the allowlist or denylist lets the family named
// name through; Exports also reads the opt-in list. A nil filter includes
// everything.
func (f *MetricFilter) Includes(name string) bool {
	if f == nil || (len(f.list) == 0 && !f.allow) {
		return true
	}
	for _, re := range f.list {
		if re.MatchString(name) {
			return f.allow
		}
	}
	return !f.allow
}
