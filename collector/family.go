package collector

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// objectLabels identify the Flux object behind a per-object series. The
// namespace label is exported_namespace so it never collides with the
// scrape target's own namespace label.
var objectLabels = []string{"kind", "name", "exported_namespace"}

// family is a per-object metric family. Its series are rendered into each
// record when the object arrives (Record), so that a scrape only copies
// bytes; the same bytes, parsed, are what the prometheus.Collector path
// sends, so one rendering serves both.
type family struct {
	name, help string
	// labels are the labels after the object labels, in the order a series'
	// extra values are given.
	labels []string
	desc   *prometheus.Desc
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
}

// families holds every per-object family, sorted by name once the package
// is initialised.
var families []*family

// perObject declares a per-object family flux_<name> with the object labels
// and extra labels.
func perObject(name, help string, extra ...string) *family {
	f := &family{name: namespace + "_" + name, help: help, labels: extra}
	all := append(append([]string{}, objectLabels...), extra...)
	f.desc = prometheus.NewDesc(f.name, help, all, nil)
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

// allDescs lists every per-object family, for docs and Describe.
func allDescs() []*prometheus.Desc {
	out := make([]*prometheus.Desc, len(families))
	for i, f := range families {
		out[i] = f.desc
	}
	return out
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
