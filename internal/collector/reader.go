package collector

import (
	"fmt"
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

// stringMap reads a map of strings, such as metadata.labels; entries that
// are not strings are faults and left out.
func (r *reader) stringMap(path ...any) map[string]string {
	v, ok := r.lookup(path)
	if !ok {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		r.wrongType(path, "object", v)
		return nil
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		s, ok := e.(string)
		if !ok {
			r.wrongType(append(append([]any{}, path...), k), "string", e)
			continue
		}
		out[k] = s
	}
	return out
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

// label reads a label's value from its source.
func (r *reader) label(s labelSource) string {
	for _, p := range s.paths {
		var v string
		if s.form == imageReference {
			v = r.imageRef(pathOf(p))
		} else {
			v = r.str(pathOf(p)...)
		}
		if v == "" {
			continue
		}
		switch s.form {
		case redactedURL:
			return redactURL(v)
		case redactedPath:
			return redactPath(v)
		}
		return v
	}
	return s.def
}

// imageRef writes an image reference {name, tag, digest} as name:tag@digest.
func (r *reader) imageRef(path []any) string {
	at := func(k string) []any { return append(append([]any{}, path...), k) }
	ref := r.str(at("name")...)
	if tag := r.str(at("tag")...); tag != "" {
		ref += ":" + tag
	}
	if digest := r.str(at("digest")...); digest != "" {
		ref += "@" + digest
	}
	return ref
}

// value reads one sample; ok=false means the series is absent.
func (r *reader) value(path []any, how reading) (float64, bool) {
	switch how {
	case numberOrZero:
		v, _ := r.num(path...)
		return v, true
	case unixSeconds:
		return r.timestamp(path...)
	case seconds:
		return r.duration(path...)
	case entries:
		return r.length(path...)
	case flag:
		b, ok := r.boolean(path...)
		if b {
			return 1, ok
		}
		return 0, true // an absent spec.suspend means not suspended
	}
	return r.num(path...)
}

// suspended tells whether the object's reconciliation is paused, as its
// kind keeps that.
func (r *reader) suspended(s suspension) bool {
	if s.annotation == "" {
		b, _ := r.boolean("spec", "suspend")
		return b
	}
	// flux-operator lower-cases the annotation's value before comparing
	// (api/v1 fluxinstance_types.go, IsDisabled), so Disabled pauses too.
	return strings.EqualFold(r.str("metadata", "annotations", s.annotation), s.value)
}

// static tells whether the object is one its controller never gives a
// status.
func (r *reader) static(s staticWhen) bool {
	return s.always || (s.path != "" && r.str(pathOf(s.path)...) == s.value)
}

// conditionBool spells a boolean as Kubernetes condition statuses do, which
// is what flux-operator's suspended label uses too.
func conditionBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}
