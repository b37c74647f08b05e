package collector

import (
	"fmt"
	"sort"
	"strings"
)

// LabelSource says, for the metrics reference, where one label of
// flux_resource_info comes from for one kind: Source is Markdown.
type LabelSource struct {
	Kind, Label, Source string
}

// InfoLabels are the flux_resource_info labels whose source differs by
// kind, in the reference's column order, and "static", the column saying
// which objects never get a status.
var InfoLabels = []string{"revision", "source_name", "url", "ref", "path", "suspended", "static"}

// OtherKinds is the Kind column's entry for kinds without a table entry.
const OtherKinds = "any other kind"

// LabelSources describes the per-kind table (kinds.go) for
// docs/metrics.md, kind by kind in name order, then any other kind.
func LabelSources() []LabelSource {
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	names = append(names, OtherKinds)
	var out []LabelSource
	for _, k := range names {
		s := specFor(k)
		for i, src := range []labelSource{s.revision, s.sourceName, s.url, s.ref, s.path} {
			out = append(out, LabelSource{Kind: k, Label: InfoLabels[i], Source: describeSource(src)})
		}
		out = append(out, LabelSource{Kind: k, Label: "suspended", Source: describeSuspension(s.suspend)})
		out = append(out, LabelSource{Kind: k, Label: "static", Source: describeStatic(s.static)})
	}
	return out
}

func describeSource(s labelSource) string {
	quoted := make([]string, len(s.paths))
	for i, p := range s.paths {
		quoted[i] = "`" + p + "`"
	}
	var b strings.Builder
	switch len(quoted) {
	case 0:
	case 1:
		b.WriteString(quoted[0])
	default:
		fmt.Fprintf(&b, "first set of %s", strings.Join(quoted, ", "))
	}
	if s.def != "" {
		fmt.Fprintf(&b, ", else `%s`", s.def)
	}
	switch s.form {
	case imageReference:
		b.WriteString(" as `name:tag@digest`")
	case redactedPath:
		b.WriteString(", redacted")
	}
	return b.String()
}

func describeSuspension(s suspension) string {
	if s.annotation == "" {
		return "`spec.suspend`"
	}
	return fmt.Sprintf("annotation `%s: %s`", s.annotation, s.value)
}

func describeStatic(s staticWhen) string {
	switch {
	case s.always:
		return "always"
	case s.path != "":
		return fmt.Sprintf("when `%s` is `%s`", s.path, s.value)
	}
	return ""
}
