package collector

import (
	"hash/maphash"
	"strings"
)

// The reference table: which fields of each Flux kind name other Flux
// objects, as plain data. Field paths are written as Flux's API reference
// writes them; "[]" marks a list whose every entry holds one reference, and
// what follows "[]." is where in the entry the reference is. The rules are
// audited in docs/flux-semantics.md, rule 10 ("References between objects").

// relation is what a reference means, in the words of the field that holds
// it; it is the relation label of flux_resource_dependency_info.
type relation uint8

const (
	// relDependsOn is spec.dependsOn: objects that must be Ready first.
	relDependsOn relation = iota
	// relSource is a sourceRef: where the object's artifact comes from.
	relSource
	// relChart is where a HelmRelease's chart comes from: spec.chartRef, or
	// the HelmChart helm-controller made from spec.chart (status.helmChart).
	relChart
	// relImageRepository is an ImagePolicy's spec.imageRepositoryRef.
	relImageRepository
	// relProvider is an Alert's spec.providerRef.
	relProvider
	// relEventSource is an entry of an Alert's spec.eventSources.
	relEventSource
	// relResource is an entry of a Receiver's spec.resources.
	relResource
	// relInclude is a GitRepository's spec.include[].repository.
	relInclude
	// relInputProvider is a ResourceSet's spec.inputsFrom[]: the
	// ResourceSetInputProvider whose exported inputs it renders.
	relInputProvider
	numRelations
)

// relations name each relation and say whether it blocks: whether the
// referring object's controller needs the referenced object (to exist, to
// have an artifact, to be Ready) before it can make the referring one
// Ready. Only blocking references count towards flux_resource_dependents
// and flux_resource_root_cause_info: an Alert does not stop working because
// an object it watches fails, nor does a Receiver.
//
// need says what of a referenced object that is not Ready the referring
// object's controller still needs (sourceNeed).
var relations = [numRelations]struct {
	name   string
	blocks bool
	need   sourceNeed
}{
	relDependsOn:       {"depends_on", true, needReady},
	relSource:          {"source", true, needArtifact},
	relChart:           {"chart", true, needChart},
	relImageRepository: {"image_repository", true, needReady},
	relProvider:        {"provider", true, needReady},
	relEventSource:     {"event_source", false, needReady},
	relResource:        {"resource", false, needReady},
	relInclude:         {"include", true, needArtifact},
	relInputProvider:   {"input_provider", true, needReady},
}

// sourceNeed is when a referenced object that is not Ready blocks.
type sourceNeed uint8

const (
	// needReady: it blocks whenever it is not Ready.
	needReady sourceNeed = iota
	// needArtifact: kustomize-controller waits while the source has no
	// artifact (kustomization_controller.go, "Source artifact not found"),
	// and source-controller while an included repository has none; both go
	// on with the last artifact while the source fails.
	needArtifact
	// needChart: helm-controller v1.6.2 (helmrelease_controller.go
	// isSourceReady, isReady) waits while the chart's source has not
	// reconciled its current generation (status.observedGeneration), is
	// Stalled, or has no artifact; an ExternalArtifact only needs its
	// artifact. A HelmChart that is Stalled, or failing on a new spec, still
	// blocks with an older artifact.
	needChart
)

func (r relation) String() string { return relations[r].name }

// refSpec is one field of a kind that names other Flux objects.
type refSpec struct {
	// path is the field; see the top of the file for "[]".
	path     string
	relation relation
	// kind is the referenced kind when the reference does not name one;
	// otherwise the reference's own kind field is read, and kindDefault
	// stands in when it is unset (the CRD's default).
	kind, kindDefault string
	// local references have no namespace field: the referenced object is
	// always in the referring object's namespace.
	local bool
	// joined references are one "<namespace>/<name>" string.
	joined bool
	// onlyWith, when set, is a field the reference counts only with:
	// helm-controller leaves status.helmChart behind when spec.chartRef
	// replaces spec.chart.
	onlyWith string
}

// refSpecs is the reference table, by Kind name. Every namespace a
// reference leaves unset is the referring object's own, as each controller
// resolves it (docs/flux-semantics.md).
var refSpecs = map[string][]refSpec{
	"Kustomization": {
		{path: "spec.dependsOn[]", relation: relDependsOn, kind: "Kustomization"},
		{path: "spec.sourceRef", relation: relSource},
	},
	"HelmRelease": {
		{path: "spec.dependsOn[]", relation: relDependsOn, kind: "HelmRelease"},
		{path: "spec.chartRef", relation: relChart},
		{path: "spec.chart.spec.sourceRef", relation: relSource},
		// The HelmChart helm-controller created from spec.chart, and reads
		// the chart from; it is named here once it exists.
		{path: "status.helmChart", relation: relChart, kind: "HelmChart", joined: true, onlyWith: "spec.chart"},
	},
	"HelmChart":             {{path: "spec.sourceRef", relation: relSource, local: true}},
	"GitRepository":         {{path: "spec.include[].repository", relation: relInclude, kind: "GitRepository", local: true}},
	"ExternalArtifact":      {{path: "spec.sourceRef", relation: relSource}},
	"ImagePolicy":           {{path: "spec.imageRepositoryRef", relation: relImageRepository, kind: "ImageRepository"}},
	"ImageUpdateAutomation": {{path: "spec.sourceRef", relation: relSource, kindDefault: "GitRepository"}},
	"Alert": {
		{path: "spec.providerRef", relation: relProvider, kind: "Provider", local: true},
		{path: "spec.eventSources[]", relation: relEventSource},
	},
	"Receiver": {{path: "spec.resources[]", relation: relResource}},
	// flux-operator api/v1 resourceset_types.go: dependsOn entries name
	// their kind (required) and may leave the namespace out; inputsFrom
	// entries name a provider in the ResourceSet's namespace, or select
	// providers by label (no edge).
	"ResourceSet": {
		{path: "spec.dependsOn[]", relation: relDependsOn},
		{path: "spec.inputsFrom[]", relation: relInputProvider, kind: "ResourceSetInputProvider", local: true},
	},
}

// ref is one reference an object makes: the referenced object and what the
// reference means. namespace is resolved (never empty for a namespaced
// referrer).
type ref struct {
	kind, namespace, name string
	relation              relation
}

// wildcard is the name Alert eventSources and Receiver resources use for
// "every object of the kind" (with matchLabels, every matching one): it
// names no object, so it makes no edge.
const wildcard = "*"

// parsedRefSpec is a refSpec with its path split for the reader.
type parsedRefSpec struct {
	refSpec
	// list is the path of the list, or of the reference when there is none;
	// entry is where the reference is within each list entry.
	list, entry []any
	isList      bool
	onlyWith    []any
}

var parsedRefSpecs = func() map[string][]parsedRefSpec {
	out := map[string][]parsedRefSpec{}
	for kind, specs := range refSpecs {
		for _, s := range specs {
			p := parsedRefSpec{refSpec: s}
			if s.onlyWith != "" {
				p.onlyWith = parsePath(s.onlyWith)
			}
			before, after, isList := strings.Cut(s.path, "[]")
			p.list, p.isList = parsePath(before), isList
			if after = strings.TrimPrefix(after, "."); after != "" {
				p.entry = parsePath(after)
			}
			out[kind] = append(out[kind], p)
		}
	}
	return out
}()

// readRefs records on the record what the dependency graph needs of the
// object: whether it is Ready (flux_resource_info's ready label is "True")
// and the references of the kind's table entry, each rendered as a
// flux_resource_dependency_info series. Faulty references are skipped and
// counted like any faulty field; a reference repeated with the same
// relation is kept once.
func (w *recordWriter) readRefs(kind, ready string, conds []condition) {
	rec, r := w.rec, w.r
	rec.ready = ready == "True"
	_, rec.hasArtifact = r.lookup(artifactPath)
	rec.chartUsable = rec.hasArtifact && (kind == "ExternalArtifact" || r.servesCharts(conds))
	for _, s := range parsedRefSpecs[kind] {
		if s.onlyWith != nil {
			if _, ok := r.lookup(s.onlyWith); !ok {
				continue
			}
		}
		if !s.isList {
			w.addRef(s, s.list)
			continue
		}
		v, ok := r.lookup(s.list)
		if !ok {
			continue
		}
		entries, ok := v.([]any)
		if !ok {
			r.wrongType(s.list, "list", v)
			continue
		}
		for i := range entries {
			at := append(append(append(make([]any, 0, len(s.list)+1+len(s.entry)), s.list...), i), s.entry...)
			w.addRef(s, at)
		}
	}
	if len(rec.refs) > 0 {
		rec.refs = rec.refs[:len(rec.refs):len(rec.refs)]
	}
	rec.graphDigest = graphDigestOf(kind, rec)
}

// servesCharts is helm-controller's isReady over a chart source that has an
// artifact: its current generation reconciled and not Stalled (conds are
// the object's conditions, as Decode read them).
func (r *reader) servesCharts(conds []condition) bool {
	gen, _ := r.num("metadata", "generation")
	observed, ok := r.num("status", "observedGeneration")
	if !ok || gen != observed {
		return false
	}
	for _, c := range conds {
		if c.typ == "Stalled" && c.status == "True" {
			return false
		}
	}
	return true
}

// artifactPath is where a source keeps its artifact.
var artifactPath = parsePath("status.artifact")

// graphSeed keys the graph digests; they are compared only within the
// process.
var graphSeed = maphash.MakeSeed()

// graphDigestOf hashes what the graph reads of a record.
func graphDigestOf(kind string, rec *Record) uint64 {
	var h maphash.Hash
	h.SetSeed(graphSeed)
	for _, s := range []string{kind, rec.Namespace, rec.Name} {
		h.WriteString(s)
		h.WriteByte(0)
	}
	h.WriteByte(boolByte(rec.ready)<<2 | boolByte(rec.hasArtifact)<<1 | boolByte(rec.chartUsable))
	for _, r := range rec.refs {
		for _, s := range []string{r.kind, r.namespace, r.name} {
			h.WriteString(s)
			h.WriteByte(0)
		}
		h.WriteByte(byte(r.relation))
	}
	return h.Sum64()
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// addRef reads the reference at path and adds it unless it names no object.
func (w *recordWriter) addRef(s parsedRefSpec, path []any) {
	rec, r := w.rec, w.r
	field := func(name string) string {
		return r.str(append(append(make([]any, 0, len(path)+1), path...), name)...)
	}
	out := ref{kind: s.kind, namespace: rec.Namespace, relation: s.relation}
	if s.joined {
		v := r.str(path...)
		if ns, name, ok := strings.Cut(v, "/"); ok {
			out.namespace, out.name = ns, name
		} else {
			out.name = v
		}
	} else {
		if v, ok := r.lookup(path); !ok {
			return
		} else if _, ok := v.(map[string]any); !ok {
			r.wrongType(path, "object", v)
			return
		}
		out.name = field("name")
		if out.kind == "" {
			out.kind = field("kind")
			if out.kind == "" {
				out.kind = s.kindDefault
			}
		}
		if !s.local {
			if ns := field("namespace"); ns != "" {
				out.namespace = ns
			}
		}
	}
	if out.name == "" || out.name == wildcard || out.kind == "" || out.namespace == "" {
		return
	}
	out.kind = internKind(out.kind)
	if out.namespace == rec.Namespace {
		out.namespace = rec.Namespace // one string per record
	}
	for _, have := range rec.refs {
		if have == out {
			return
		}
	}
	rec.refs = append(rec.refs, out)
	w.add(dependencyInfoFamily, 1, out.kind, out.name, out.namespace, out.relation.String())
}

// internKind returns the table's own string for a known kind name, so that
// the references of thousands of records share it.
func internKind(k string) string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return k
}

var kindNames = func() map[string]string {
	out := map[string]string{}
	add := func(k string) { out[k] = k }
	for k := range kinds {
		add(k)
	}
	for k, specs := range refSpecs {
		add(k)
		for _, s := range specs {
			if s.kind != "" {
				add(s.kind)
			}
			if s.kindDefault != "" {
				add(s.kindDefault)
			}
		}
	}
	for _, k := range []string{"OCIRepository", "Bucket", "HelmRepository", "ExternalArtifact"} {
		add(k)
	}
	return out
}()

// dependencyInfoFamily is rendered by Decode, one series per reference; the
// other dependency families come from the graph across all records
// (graph.go).
var dependencyInfoFamily = perObject("resource_dependency_info",
	"A reference from this Flux object to another one, read from the object's spec or status (docs/flux-semantics.md, rule 10): relation is depends_on (spec.dependsOn), source (a sourceRef), chart (spec.chartRef, or the HelmChart helm-controller made, status.helmChart), image_repository, provider, event_source, resource, include or input_provider (a ResourceSet's spec.inputsFrom); a namespace the reference leaves out is the object's own. Value is always 1.",
	"dependency_kind", "dependency_name", "dependency_namespace", "relation")

// AlertProvider is the name of the Provider an Alert's record references
// (spec.providerRef.name), or "" for a nil record or one not of an Alert.
func AlertProvider(r *Record) string {
	if r == nil {
		return ""
	}
	for _, x := range r.refs {
		if x.relation == relProvider {
			return x.name
		}
	}
	return ""
}
