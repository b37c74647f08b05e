package collector

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// Kubernetes labels and annotations as Prometheus labels, as
// kube-state-metrics' kube_<resource>_labels and kube_<resource>_annotations
// export them: one series per object of an allowlisted kind, value 1, with
// the object labels and a label_<name> (annotation_<name>) per allowlisted
// key the object has. Nothing is exported unless an allowlist names the kind.
var (
	labelsFamily = dynamicFamily(catalog.Namespace+"_resource_labels",
		"Kubernetes labels of a Flux object as Prometheus labels: for each key --metric-labels-allowlist selects for its kind (resource), label_ and the key, sanitized as kube-state-metrics sanitizes it. Emitted only for kinds the allowlist names. Value is always 1.",
		objectLabels...)
	annotationsFamily = dynamicFamily(catalog.Namespace+"_resource_annotations",
		"Kubernetes annotations of a Flux object as Prometheus labels: for each key --metric-annotations-allowlist selects for its kind (resource), annotation_ and the key, sanitized as kube-state-metrics sanitizes it. Emitted only for kinds the allowlist names. Value is always 1.",
		objectLabels...)
)

// MetadataAllowlist is a parsed --metric-labels-allowlist or
// --metric-annotations-allowlist: which label or annotation keys to export,
// by resource (the lower-case plural of a Flux kind, as `kubectl
// api-resources` lists it). The nil allowlist exports nothing.
type MetadataAllowlist struct {
	// keys by resource; when wildcard is set, its keys apply to every
	// resource and the rest are ignored, as in kube-state-metrics.
	keys     map[string][]string
	wildcard bool
}

// allResources is the resource of an allowlist entry that names every kind.
const allResources = "*"

// ParseMetadataAllowlist reads an allowlist in kube-state-metrics' syntax,
// resource=[key,key,...],resource=[...]:
//
//   - a resource is the lower-case plural of a kind (kustomizations), or *
//     for every kind; when * is given it applies to every kind and the other
//     entries are ignored;
//   - a key is a label or annotation key (app.kubernetes.io/part-of); * as
//     the first key selects every key, and a key with one * in it selects
//     the keys it matches (team.example.com/*); a * key after the first is
//     ignored;
//   - an empty list, resource=[], selects nothing for that kind; a resource
//     given twice keeps its last list.
//
// flag names the flag in errors, which say what to write instead. warnings
// are entries that are valid but do not do what they seem to (a * that is
// ignored), for the caller to log.
func ParseMetadataAllowlist(flag, value string) (a *MetadataAllowlist, warnings []string, err error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, nil, nil
	}
	a = &MetadataAllowlist{keys: map[string][]string{}}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s=%q: %s; write resource=[key,key],resource=[key], e.g. kustomizations=[team,app.kubernetes.io/part-of],*=[team]", flag, value, fmt.Sprintf(format, args...))
	}
	rest := value
	var order []string
	for rest != "" {
		name, list, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, nil, bad("%q has no =[...]", rest)
		}
		name = strings.TrimSpace(name)
		list = strings.TrimLeft(list, " ")
		if !strings.HasPrefix(list, "[") {
			return nil, nil, bad("the keys of %q must be in brackets", name)
		}
		end := strings.IndexByte(list, ']')
		if end < 0 {
			return nil, nil, bad("the list of %q has no closing ]", name)
		}
		inner := list[1:end]
		rest = strings.TrimSpace(list[end+1:])
		if rest != "" {
			if !strings.HasPrefix(rest, ",") {
				return nil, nil, bad("%q follows the list of %q without a comma", rest, name)
			}
			rest = strings.TrimSpace(rest[1:])
			if rest == "" {
				return nil, nil, bad("it ends with a comma")
			}
		}
		if err := checkResourceName(name); err != nil {
			return nil, nil, bad("%v", err)
		}
		if strings.ContainsAny(inner, "[=") {
			return nil, nil, bad("the list of %q holds %q, which a key cannot", name, inner)
		}
		keys := []string{}
		if strings.TrimSpace(inner) != "" {
			for _, k := range strings.Split(inner, ",") {
				k = strings.TrimSpace(k)
				switch {
				case k == "":
					return nil, nil, bad("the list of %q has an empty key", name)
				case strings.Count(k, "*") > 1:
					return nil, nil, bad("key %q has more than one *; a key may hold one", k)
				case k == lastApplied:
					return nil, nil, bad("%s holds the whole object as kubectl applied it (a HelmRelease's values included, which may hold credentials) and is never exported", k)
				case k == "*" && len(keys) > 0:
					warnings = append(warnings, fmt.Sprintf("%s: %s=[...,*]: * selects every key only as the first key; here it is ignored, as in kube-state-metrics", flag, name))
				}
				keys = append(keys, k)
			}
		}
		if _, dup := a.keys[name]; dup {
			warnings = append(warnings, fmt.Sprintf("%s: %s is given twice; the last list is used", flag, name))
			order = slices.DeleteFunc(order, func(n string) bool { return n == name })
		}
		a.keys[name] = keys
		order = append(order, name)
	}
	if _, ok := a.keys[allResources]; ok {
		a.wildcard = true
		if len(a.keys) > 1 {
			others := slices.DeleteFunc(order, func(n string) bool { return n == allResources })
			warnings = append(warnings, fmt.Sprintf("%s: *=[...] applies to every kind and overrides %s, as in kube-state-metrics; list the keys for every kind under *", flag, strings.Join(others, ", ")))
		}
	}
	return a, warnings, nil
}

// checkResourceName accepts * and names that can be a resource: lower-case
// letters, digits and dashes. A kind's name, singular or capitalised, is
// the usual mistake and gets a hint.
func checkResourceName(name string) error {
	switch {
	case name == "":
		return errors.New("an entry has no resource before =")
	case name == allResources:
		return nil
	}
	for k := range kinds {
		if strings.EqualFold(name, k) {
			return fmt.Errorf("%q is a kind; name its resource, the lower-case plural `kubectl api-resources` lists (e.g. kustomizations, gitrepositories)", name)
		}
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("%q is not a resource name; write the kind's lower-case plural, as `kubectl api-resources` lists it", name)
		}
	}
	return nil
}

// keysFor returns the key patterns for a resource; ok is false when the
// allowlist does not name it, and then, as with an empty list, nothing is
// exported for it.
func (a *MetadataAllowlist) keysFor(resource string) (keys []string, ok bool) {
	if a == nil {
		return nil, false
	}
	if a.wildcard {
		keys = a.keys[allResources]
	} else if keys, ok = a.keys[resource]; !ok {
		return nil, false
	}
	return keys, len(keys) > 0
}

// Unknown lists, sorted, the resources the allowlist names (* aside) that
// are not among watched; nil for the nil allowlist.
func (a *MetadataAllowlist) Unknown(watched []string) []string {
	var out []string
	for _, r := range a.Resources() {
		if r != allResources && !slices.Contains(watched, r) {
			out = append(out, r)
		}
	}
	return out
}

// Resources lists the resources the allowlist names, sorted, * included.
func (a *MetadataAllowlist) Resources() []string {
	if a == nil {
		return nil
	}
	out := make([]string, 0, len(a.keys))
	for r := range a.keys {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// lastApplied is the annotation kubectl apply keeps the whole applied
// object in. No pattern selects it: a HelmRelease's spec.values, which may
// hold credentials, would become a label value.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// selected returns the entries of m whose keys the patterns select. As in
// kube-state-metrics, * selects everything only as the first pattern; a
// pattern with a * inside (team.example.com/*) is our extension. Neither
// selects lastApplied.
func selected(m map[string]string, patterns []string) map[string]string {
	if patterns[0] == "*" {
		if _, ok := m[lastApplied]; !ok {
			return m
		}
		out := maps.Clone(m)
		delete(out, lastApplied)
		return out
	}
	out := map[string]string{}
	for _, p := range patterns {
		before, after, wild := strings.Cut(p, "*")
		if !wild {
			if v, ok := m[p]; ok {
				out[p] = v
			}
			continue
		}
		if before == "" && after == "" {
			continue // a * that is not first
		}
		for k, v := range m {
			if k == lastApplied {
				continue
			}
			if len(k) >= len(before)+len(after) && strings.HasPrefix(k, before) && strings.HasSuffix(k, after) {
				out[k] = v
			}
		}
	}
	return out
}

// metadataLabels turns the selected keys into Prometheus labels named
// prefix_<key>, as kube-state-metrics names them: characters other than
// ASCII letters, digits and _ become _, a lower-case letter or digit
// followed by an upper-case letter gets a _ between them, and the result is
// lower-cased (teamName and team-name are both label_team_name). Keys that
// end up with one name are all renamed, in key order, to
// <name>_conflict1, <name>_conflict2, ..., skipping names already taken, so
// that no key is silently dropped.
func metadataLabels(prefix string, m map[string]string) []labelPair {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]labelPair, 0, len(keys))
	at := make(map[string]int, len(keys))      // label name → its position in out
	collided := map[string]int{}               // sanitized name → suffixes handed out
	next := func(base string, n *int) string { // the next free conflict name
		for {
			*n++
			name := fmt.Sprintf("%s_conflict%d", base, *n)
			if _, taken := at[name]; !taken {
				return name
			}
		}
	}
	for _, k := range keys {
		base := prefix + "_" + sanitizeLabelName(k)
		name := base
		if n, ok := collided[base]; ok {
			name = next(base, &n)
			collided[base] = n
		} else if i, taken := at[base]; taken {
			// The first collision: the key that took the plain name is
			// renamed too, so that neither looks like the only one.
			n := 0
			renamed := next(base, &n)
			delete(at, base)
			out[i].name = renamed
			at[renamed] = i
			name = next(base, &n)
			collided[base] = n
		}
		at[name] = len(out)
		out = append(out, labelPair{name, m[k]})
	}
	return out
}

// sanitizeLabelName is kube-state-metrics' spelling of a Kubernetes key as
// a label name (see metadataLabels). Keys are ASCII, as Kubernetes
// validates them; any other character would become one _ too.
func sanitizeLabelName(k string) string {
	var b strings.Builder
	b.Grow(len(k) + 4)
	prev := rune(0) // the previous character, as written
	for _, c := range k {
		switch {
		case c >= 'A' && c <= 'Z':
			if prev >= 'a' && prev <= 'z' || prev >= '0' && prev <= '9' {
				b.WriteByte('_')
			}
			b.WriteRune(c + 'a' - 'A')
			prev = c
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
			b.WriteRune(c)
			prev = c
		default:
			b.WriteByte('_')
			prev = '_'
		}
	}
	return b.String()
}

// addMetadata renders the families read from the object's metadata that
// the allowlists select; each costs one check when it is off.
func (w *recordWriter) addMetadata(k kube.Kind, labels, annotations *MetadataAllowlist) {
	for _, m := range []struct {
		allow  *MetadataAllowlist
		f      *family
		field  string
		prefix string
	}{
		{labels, labelsFamily, "labels", "label"},
		{annotations, annotationsFamily, "annotations", "annotation"},
	} {
		keys, ok := m.allow.keysFor(k.Resource)
		if !ok || !w.on.has(m.f) {
			continue
		}
		pairs := metadataLabels(m.prefix, selected(w.r.stringMap("metadata", m.field), keys))
		pairs = append(pairs, labelPair{"kind", w.object[0]}, labelPair{"name", w.object[1]}, labelPair{"exported_namespace", w.object[2]})
		w.addLabeled(m.f, 1, pairs)
	}
}
