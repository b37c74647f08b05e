package collector

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
)

// objectLabels identify the Flux object behind a per-object series. The
// namespace label is exported_namespace so it never collides with the
// scrape target's own namespace label.
var objectLabels = []string{"kind", "name", "exported_namespace"}

// family is a per-object metric family. Its series are rendered into each
// record when the object arrives (Record), so that a scrape only copies
// bytes.
type family struct {
	name, help string
	// labels are the labels after the object labels, in the order a series'
	// extra values are given.
	labels []string
	// order lists the positions of the object labels and then the extra
	// labels, sorted by label name: client_golang writes labels that way.
	order []int
	// shared is true when, sorted, the object labels come first: then a
	// series is written as `name{`, the record's object labels, and the
	// series' own rest, so that a record holds its object labels once.
	shared bool
	// open is `name{`.
	open []byte
	// id is the family's position in families, which is name order: the
	// order a scrape writes them in.
	id int
	// dynamic families' series each carry label names of their own
	// (flux_resource_labels, gotk_resource_info): labels then lists only
	// those the reference shows.
	dynamic bool
	// typ is the family's metric type; counters and histograms are the
	// delivery families' (delivery.go), whose values the exporter
	// accumulates across events.
	typ metricType
	// buckets are a histogram's upper bounds, ascending, without +Inf.
	buckets []float64
	// optIn families are rendered only when --metric-opt-in-list names
	// them (offByDefault).
	optIn bool
	// aggregate families add objects up: their cost grows with the
	// namespaces, not the objects.
	aggregate bool
}

// offByDefault makes f opt-in: no alert or recording rule reads it, and a
// dashboard only in a column or line its panel says is empty until it is
// turned on (dashboards' TestOptionalTargets), or what it says is already
// in another family, so the default set leaves its series out. It returns
// f for use in a declaration.
func (f *family) offByDefault() *family {
	f.optIn = true
	return f
}

// metricType is a family's Prometheus type.
type metricType int

const (
	gaugeType metricType = iota
	counterType
	histogramType
)

func (t metricType) String() string {
	switch t {
	case counterType:
		return "counter"
	case histogramType:
		return "histogram"
	}
	return "gauge"
}

// perObjectCounter declares a per-object counter flux_<name>; name ends in
// _total, as the text format spells a counter's samples.
func perObjectCounter(name, help string, extra ...string) *family {
	if !strings.HasSuffix(name, "_total") {
		panic("collector: counter without _total: " + name) // programming error at init
	}
	f := perObject(name, help, extra...)
	f.typ = counterType
	return f
}

// perObjectHistogram declares a per-object histogram flux_<name> with the
// object labels and these upper bounds. Its series are rendered whole
// (_bucket with le last, as client_golang writes it, then _sum and
// _count), never sharing the record's object labels, since their names
// differ from the family's.
func perObjectHistogram(name, help string, buckets ...float64) *family {
	f := perObject(name, help)
	f.typ = histogramType
	f.shared = false
	f.buckets = buckets
	return f
}

// families holds every per-object family, sorted by name once the package
// is initialised.
var families []*family

// perObject declares a per-object family flux_<name> with the object labels
// and extra labels.
func perObject(name, help string, extra ...string) *family {
	f := &family{name: catalog.Namespace + "_" + name, help: help, labels: extra}
	all := append(append([]string{}, objectLabels...), extra...)
	f.order = make([]int, len(all))
	for i := range f.order {
		f.order[i] = i
	}
	sort.SliceStable(f.order, func(i, j int) bool { return all[f.order[i]] < all[f.order[j]] })
	f.shared = slices.Equal(f.order[:len(objectLabels)], sortedObjectLabels)
	f.open = append([]byte(f.name), '{')
	families = append(families, f)
	return f
}

// dynamicFamily declares a per-object family named name in full whose
// series each bring their own label names (appendLabeled); documented are
// the label names the metrics reference lists for it. Its series are
// written whole, never sharing the record's object labels, since their
// names need not include or come first among them.
func dynamicFamily(name, help string, documented ...string) *family {
	f := &family{name: name, help: help, labels: documented, dynamic: true}
	f.open = append([]byte(name), '{')
	families = append(families, f)
	return f
}

// aggregateFamily declares a family named name in full whose series add
// objects up (delivery_groups.go): labels documents the labels after
// exported_namespace and kind; the allowlisted labels, one per key, vary
// with the cluster, as flux_resource_labels' do. Its series are
// written whole, as a dynamic family's.
func aggregateFamily(name string, typ metricType, buckets []float64, help string, labels ...string) *family {
	f := dynamicFamily(name, help, append([]string{"exported_namespace", "kind"}, labels...)...)
	f.typ, f.buckets, f.aggregate = typ, buckets, true
	return f
}

// labelPair is one label of a dynamic family's series.
type labelPair struct{ name, value string }

// appendLabeled renders a whole series of a dynamic family,
// `name{l="v",...} `, its labels sorted by name as client_golang writes
// them. It sorts pairs in place. Two labels of one name, an invalid name or
// a value that is not valid UTF-8 leave the series out, and the error says
// why.
func (f *family) appendLabeled(buf []byte, pairs []labelPair) ([]byte, error) {
	start := len(buf)
	buf = append(buf, f.open...)
	buf, err := appendLabelBody(buf, pairs)
	if err != nil {
		return buf[:start], fmt.Errorf("%s: %w", f.name, err)
	}
	return append(buf, '}', ' '), nil
}

// appendLabelBody renders pairs as `l="v",...`, sorted by name in place.
// Two labels of one name, an invalid name or a value that is not valid
// UTF-8 render nothing, and the error says why.
func appendLabelBody(buf []byte, pairs []labelPair) ([]byte, error) {
	slices.SortFunc(pairs, func(a, b labelPair) int { return strings.Compare(a.name, b.name) })
	for i, p := range pairs {
		if !model.LabelName(p.name).IsValidLegacy() {
			return buf, fmt.Errorf("invalid label name %q", p.name)
		}
		if i > 0 && pairs[i-1].name == p.name {
			return buf, fmt.Errorf("label %s twice", p.name)
		}
		if !utf8.ValidString(p.value) {
			return buf, fmt.Errorf("label %s is not valid UTF-8: %q", p.name, p.value)
		}
	}
	for i, p := range pairs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, p.name...)
		buf = append(buf, '=', '"')
		buf = appendEscapedLabelValue(buf, p.value)
		buf = append(buf, '"')
	}
	return buf, nil
}

// sortedObjectLabels are the positions of the object labels sorted by name:
// exported_namespace, kind, name.
var sortedObjectLabels = func() []int {
	order := []int{0, 1, 2}
	sort.Slice(order, func(i, j int) bool { return objectLabels[order[i]] < objectLabels[order[j]] })
	return order
}()

// appendObjectLabels renders the object labels as shared families start
// with them: `exported_namespace="..",kind="..",name=".."`.
func appendObjectLabels(buf []byte, object []string) ([]byte, error) {
	for n, i := range sortedObjectLabels {
		if !utf8.ValidString(object[i]) {
			return buf, fmt.Errorf("label %s is not valid UTF-8: %q", objectLabels[i], object[i])
		}
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, objectLabels[i]...)
		buf = append(buf, '=', '"')
		buf = appendEscapedLabelValue(buf, object[i])
		buf = append(buf, '"')
	}
	return buf, nil
}

// Package variables are initialised before init functions run, so every
// family exists by now.
func init() {
	slices.SortFunc(families, func(a, b *family) int { return strings.Compare(a.name, b.name) })
	for i, f := range families {
		if i > 0 && families[i-1].name == f.name {
			panic("collector: family declared twice: " + f.name) // programming error at init
		}
		f.id = i
	}
	buildHeaders()
}

// catalogued is the family as the catalogue lists it: object labels and
// its own (a dynamic family's documented ones).
func (f *family) catalogued() catalog.Family {
	labels := f.labels
	if !f.dynamic {
		labels = append(append([]string{}, objectLabels...), f.labels...)
	}
	return catalog.Family{Name: f.name, Type: catalog.Type(f.typ.String()), Help: f.help, Labels: labels, PerObject: !f.aggregate, OptIn: f.optIn}
}

// appendSeries renders what a record keeps of one series. For a shared
// family that is what follows the object labels: `,l="v",...} `; for
// another family, the whole `name{l="v",...} `. values holds the object
// label values, then the extra ones. A label value that is not valid UTF-8
// cannot be exposed; the series is then left out and the error says why.
func (f *family) appendSeries(buf []byte, values []string) ([]byte, error) {
	if len(values) != len(objectLabels)+len(f.labels) {
		return buf, fmt.Errorf("%s: %d label values for %d labels", f.name, len(values), len(objectLabels)+len(f.labels))
	}
	for i, v := range values[len(objectLabels):] {
		if !utf8.ValidString(v) {
			return buf, fmt.Errorf("%s: label %s is not valid UTF-8: %q", f.name, f.labels[i], v)
		}
	}
	order := f.order
	if f.shared {
		order = order[len(objectLabels):]
	} else {
		buf = append(buf, f.open...)
	}
	for n, i := range order {
		if n > 0 || f.shared {
			buf = append(buf, ',')
		}
		buf = append(buf, f.labelName(i)...)
		buf = append(buf, '=', '"')
		buf = appendEscapedLabelValue(buf, values[i])
		buf = append(buf, '"')
	}
	return append(buf, '}', ' '), nil
}

func (f *family) labelName(i int) string {
	if i < len(objectLabels) {
		return objectLabels[i]
	}
	return f.labels[i-len(objectLabels)]
}

// appendEscapedLabelValue escapes a label value as both the text format and
// OpenMetrics require: backslash, double quote and line feed.
func appendEscapedLabelValue(buf []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			buf = append(buf, '\\', '\\')
		case '"':
			buf = append(buf, '\\', '"')
		case '\n':
			buf = append(buf, '\\', 'n')
		default:
			buf = append(buf, c)
		}
	}
	return buf
}

// parsePath turns "status.history[0].chartVersion" into the keys and list
// indexes the reader follows. The table is code, so a malformed path is a
// programming error found at init.
func parsePath(s string) []any {
	var out []any
	for _, part := range strings.Split(s, ".") {
		key, index, hasIndex := strings.Cut(part, "[")
		if key == "" {
			panic("collector: bad field path " + s)
		}
		out = append(out, key)
		if hasIndex {
			n, err := strconv.Atoi(strings.TrimSuffix(index, "]"))
			if err != nil || !strings.HasSuffix(index, "]") {
				panic("collector: bad field path " + s)
			}
			out = append(out, n)
		}
	}
	return out
}

// paths caches parsed field paths: Decode reads them for every object.
var paths = map[string][]any{}

func init() {
	add := func(p string) {
		if p != "" {
			paths[p] = parsePath(p)
		}
	}
	for _, s := range resolvedSpecs {
		for _, src := range []labelSource{s.revision, s.sourceName, s.url, s.ref, s.path} {
			for _, p := range src.paths {
				add(p)
			}
		}
		add(s.static.path)
		for _, g := range s.gauges {
			add(g.from)
		}
		for _, in := range s.infos {
			add(in.when)
			for _, l := range in.labels {
				for _, p := range l.from.paths {
					add(p)
				}
			}
		}
	}
}

// pathOf returns a table path's parsed form.
func pathOf(p string) []any {
	if parsed, ok := paths[p]; ok {
		return parsed
	}
	return parsePath(p) // not in the table: a test's own path
}
