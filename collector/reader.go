package collector

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// reader walks an unstructured object and records every field that is
// present but of the wrong type, so that a malformed object is still
// reported with whatever is valid and its faults are counted.
type reader struct {
	obj  map[string]any
	errs []error
}

// lookup follows a path of map keys (string) and list indexes (int).
func (r *reader) lookup(path []any) (any, bool) {
	var cur any = r.obj
	for i, p := range path {
		switch key := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				r.wrongType(path[:i], "object", cur)
				return nil, false
			}
			if cur, ok = m[key]; !ok || cur == nil {
				return nil, false
			}
		case int:
			l, ok := cur.([]any)
			if !ok {
				r.wrongType(path[:i], "list", cur)
				return nil, false
			}
			if key >= len(l) || l[key] == nil {
				return nil, false
			}
			cur = l[key]
		}
	}
	return cur, true
}

func (r *reader) wrongType(path []any, want string, got any) {
	r.fail(path, fmt.Errorf("want %s, got %T", want, got))
}

// fail records a faulty field once, however often it is read.
func (r *reader) fail(path []any, err error) {
	p := pathString(path)
	for _, e := range r.errs {
		if strings.HasPrefix(e.Error(), p+": ") {
			return
		}
	}
	r.errs = append(r.errs, fmt.Errorf("%s: %w", p, err))
}

func pathString(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch k := p.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(k)
		case int:
			fmt.Fprintf(&b, "[%d]", k)
		}
	}
	return b.String()
}

func (r *reader) str(path ...any) string {
	v, ok := r.lookup(path)
	if !ok {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		r.wrongType(path, "string", v)
	}
	return s
}

func (r *reader) boolean(path ...any) (bool, bool) {
	v, ok := r.lookup(path)
	if !ok {
		return false, false
	}
	b, ok := v.(bool)
	if !ok {
		r.wrongType(path, "boolean", v)
	}
	return b, ok
}

// num accepts the numeric types that JSON decoding into unstructured yields.
func (r *reader) num(path ...any) (float64, bool) {
	v, ok := r.lookup(path)
	if !ok {
		return 0, false
	}
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case int:
		return float64(n), true
	}
	r.wrongType(path, "number", v)
	return 0, false
}

// timestamp reads an RFC 3339 time as Unix seconds.
func (r *reader) timestamp(path ...any) (float64, bool) {
	s := r.str(path...)
	if s == "" {
		return 0, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		r.fail(path, err)
		return 0, false
	}
	return float64(t.UnixNano()) / 1e9, true
}

// duration reads a Go duration string, as Flux writes spec.interval.
func (r *reader) duration(path ...any) (float64, bool) {
	s := r.str(path...)
	if s == "" {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		r.fail(path, err)
		return 0, false
	}
	return d.Seconds(), true
}

func (r *reader) length(path ...any) (float64, bool) {
	v, ok := r.lookup(path)
	if !ok {
		return 0, false
	}
	l, ok := v.([]any)
	if !ok {
		r.wrongType(path, "list", v)
		return 0, false
	}
	return float64(len(l)), true
}

// field reads one label value of the info metric.
type field func(r *reader) string

// value reads one sample; ok=false means the series is absent.
type value func(r *reader) (float64, bool)

func str(path ...any) field { return func(r *reader) string { return r.str(path...) } }

// firstOf is the first non-empty of several fields.
func firstOf(fs ...field) field {
	return func(r *reader) string {
		for _, f := range fs {
			if s := f(r); s != "" {
				return s
			}
		}
		return ""
	}
}

func num(path ...any) value { return func(r *reader) (float64, bool) { return r.num(path...) } }
func timestamp(path ...any) value {
	return func(r *reader) (float64, bool) { return r.timestamp(path...) }
}
func duration(path ...any) value {
	return func(r *reader) (float64, bool) { return r.duration(path...) }
}
func length(path ...any) value { return func(r *reader) (float64, bool) { return r.length(path...) } }

func flag(path ...any) value {
	return func(r *reader) (float64, bool) {
		b, ok := r.boolean(path...)
		if b {
			return 1, ok
		}
		return 0, true // an absent spec.suspend means not suspended
	}
}

// absent marks a value slot with no series. NaN never occurs in a valid
// Flux field, so it is safe as the sentinel and costs no extra memory.
var absent = math.NaN()

func isAbsent(v float64) bool { return math.IsNaN(v) }

// conditionBool spells a boolean as Kubernetes condition statuses do, which
// is what flux-operator's suspended label uses too.
func conditionBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// predicate is a yes/no question about an object.
type predicate func(r *reader) bool

func never(*reader) bool  { return false }
func always(*reader) bool { return true }

// equals asks whether the string at path is want.
func equals(want string, path ...any) predicate {
	return func(r *reader) bool { return r.str(path...) == want }
}

// constant is a field's value when nothing in the object sets it, such as a
// controller's documented default.
func constant(s string) field { return func(*reader) string { return s } }
