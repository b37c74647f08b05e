package collector

import (
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// The dependency graph across all records: which referenced objects are
// missing, how many objects depend on each one, and what blocks each object
// that is not ready. It is computed from one snapshot of the caches and
// rendered into records of its own, which scrapes reuse until something the
// graph reads changes (graphCache). docs/flux-semantics.md, rule 10, gives the rules.

var (
	dependencyMissingFamily = perObject("resource_dependency_missing",
		"A reference of this Flux object (flux_resource_dependency_info) to an object that does not exist: the kind's cache is synced, the namespace is watched, and the object is not in it. Flux reports this only as an endless DependencyNotReady or ArtifactFailed. A kind or namespace the exporter does not watch is never judged. Only when sharding is off. Value is always 1.",
		"dependency_kind", "dependency_name", "dependency_namespace")
	dependentsFamily = perObject("resource_dependents",
		"How many Flux objects depend on this one, directly or through others, by references that can block them (every relation but event_source and resource): the blast radius of its failure. Only when sharding is off.").offByDefault()
	rootCauseFamily = perObject("resource_root_cause_info",
		"For a Flux object that is not Ready and is blocked by a referenced object (one that is missing, or not Ready and, for a source, without an artifact; for a HelmRelease's chart, also Stalled or behind its generation, as helm-controller waits then), the most upstream such object: follow the references that block to an object none of whose references block, or to a missing object (docs/flux-semantics.md, rule 10). One series per root; in a cycle with nothing failing upstream, the other members of the cycle are the roots. Only when sharding is off. Value is always 1.",
		"root_kind", "root_name", "root_namespace")
)

// graphFamilies are the families the graph renders, for the metric filter.
var graphFamilies = []*family{dependencyMissingFamily, dependentsFamily, rootCauseFamily}

// objectKey identifies a Flux object by Kind name, namespace and name: what
// a reference names.
type objectKey struct{ kind, namespace, name string }

// lookupFunc says what the caches know of an object no record of the
// snapshot holds: watched is false when the exporter cannot know (a kind it
// does not watch, a namespace outside --namespaces); exists is true when it
// holds the object after all (it arrived after the snapshot) or cannot yet
// tell (the kind's cache has not synced). kube.Watcher.Exists is one.
type lookupFunc func(kind, namespace, name string) (exists, watched bool)

// graph is the dependency graph of one snapshot. Vertices are the records
// (0 to len(nodes)-1) and then the missing objects.
type graph struct {
	nodes   []graphNode
	missing []objectKey
	// blocks are each node's blocking references.
	blocks [][]blockEdge
	// missingOf are each node's references to missing objects, by any
	// relation, as indexes into missing.
	missingOf [][]int32
}

// blockEdge is a blocking reference to vertex to; need says what of it the
// referring controller needs when it is not Ready (relations' need).
type blockEdge struct {
	to   int32
	need sourceNeed
}

type graphNode struct {
	key objectKey
	rec *Record
}

// newGraph links the records of the synced kinds of states by their
// references. A reference to an object absent from the snapshot is to a
// missing object when lookup says the caches would hold it; otherwise it
// leads nowhere.
func newGraph(states []kube.KindState[*Record], lookup lookupFunc) *graph {
	g := &graph{}
	n := 0
	for _, ks := range states {
		n += len(ks.Records)
	}
	index := make(map[objectKey]int32, n)
	g.nodes = make([]graphNode, 0, n)
	for _, ks := range states {
		for _, rec := range ks.Records {
			key := objectKey{ks.Kind.Kind, rec.Namespace, rec.Name}
			if _, dup := index[key]; dup {
				continue // the same Kind name in two API groups: a reference cannot tell them apart
			}
			index[key] = int32(len(g.nodes))
			g.nodes = append(g.nodes, graphNode{key: key, rec: rec})
		}
	}
	g.blocks = make([][]blockEdge, len(g.nodes))
	g.missingOf = make([][]int32, len(g.nodes))
	missingIndex := map[objectKey]int32{}
	for i, nd := range g.nodes {
		for _, r := range nd.rec.refs {
			key := objectKey{r.kind, r.namespace, r.name}
			v, found := index[key]
			if !found {
				if exists, watched := lookup(r.kind, r.namespace, r.name); exists || !watched {
					continue
				}
				m, ok := missingIndex[key]
				if !ok {
					m = int32(len(g.missing))
					missingIndex[key] = m
					g.missing = append(g.missing, key)
				}
				g.missingOf[i] = appendUnique(g.missingOf[i], m)
				v = int32(len(g.nodes)) + m
			}
			if rel := relations[r.relation]; rel.blocks {
				if e := (blockEdge{v, rel.need}); !slices.Contains(g.blocks[i], e) {
					g.blocks[i] = append(g.blocks[i], e)
				}
			}
		}
	}
	return g
}

func appendUnique(list []int32, v int32) []int32 {
	if slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}

// key is a vertex's object.
func (g *graph) key(v int32) objectKey {
	if int(v) < len(g.nodes) {
		return g.nodes[v].key
	}
	return g.missing[int(v)-len(g.nodes)]
}

// dependents counts, for each node, the other nodes that reach it through
// blocking references: a breadth-first walk up the reversed references per
// node, which visits each (dependent, dependency) pair once, so cycles end.
func (g *graph) dependents() []int32 {
	n := len(g.nodes)
	up := make([][]int32, n)
	for i, bs := range g.blocks {
		for _, e := range bs {
			if v := e.to; int(v) < n && int(v) != i {
				up[v] = append(up[v], int32(i))
			}
		}
	}
	out := make([]int32, n)
	seen := make([]int32, n) // the walk that last saw each node, plus one
	var queue []int32
	for start := range n {
		if len(up[start]) == 0 {
			continue
		}
		mark := int32(start) + 1
		seen[start] = mark
		queue = append(queue[:0], int32(start))
		count := int32(0)
		for len(queue) > 0 {
			v := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			for _, u := range up[v] {
				if seen[u] != mark {
					seen[u] = mark
					count++
					queue = append(queue, u)
				}
			}
		}
		out[start] = count
	}
	return out
}

// rootCauses returns, for each node that is not Ready and blocked by a
// vertex that is not Ready or missing, the most upstream such vertices,
// sorted. A reference blocks when its object is missing, or is not Ready
// and its controller cannot go on without it (relations' need): with no
// artifact, for kustomize-controller's source; with no artifact, Stalled or
// its current generation not reconciled, for helm-controller's chart
// (docs/flux-semantics.md, rule 10).
// Among the vertices that are not Ready (missing ones included) and the
// references that block, the strongly connected components are found
// with Tarjan's algorithm, which emits a component only after every
// component it reaches: the roots of a component are those of the
// components it reaches, or its own members when it reaches none.
func (g *graph) rootCauses() [][]int32 {
	rs := newRootSearch(g)
	for v := range int32(rs.total) {
		if rs.bad(v) && rs.order[v] == unvisited {
			rs.visit(v)
		}
	}
	return rs.roots()
}

const unvisited = -1

// rootSearch is Tarjan's strongly connected components over the blocking
// edges of the graph's failing objects (missing objects count as failing),
// each component carrying the roots upstream of it.
type rootSearch struct {
	g            *graph
	n, total     int // objects; objects and missing ones
	order, low   []int32
	comp         []int32
	onStack      []bool
	stack        []int32
	counter      int32
	compRoots    [][]int32
	compMembers  [][]int32
	compUpstream []bool // the component reaches another one
}

func newRootSearch(g *graph) *rootSearch {
	n := len(g.nodes)
	total := n + len(g.missing)
	rs := &rootSearch{g: g, n: n, total: total, order: make([]int32, total), low: make([]int32, total),
		comp: make([]int32, total), onStack: make([]bool, total)}
	for i := range rs.order {
		rs.order[i], rs.comp[i] = unvisited, unvisited
	}
	return rs
}

// bad is whether v fails: missing, or not Ready.
func (rs *rootSearch) bad(v int32) bool { return int(v) >= rs.n || !rs.g.nodes[v].rec.ready }

// blocking is whether e stops its object: its target fails in what the
// edge needs of it.
func (rs *rootSearch) blocking(e blockEdge) bool {
	if !rs.bad(e.to) || int(e.to) >= rs.n {
		return rs.bad(e.to)
	}
	switch rec := rs.g.nodes[e.to].rec; e.need {
	case needArtifact:
		return !rec.hasArtifact
	case needChart:
		return !rec.chartUsable
	}
	return true
}

func (rs *rootSearch) next(v int32) []blockEdge {
	if int(v) >= rs.n {
		return nil // a missing object references nothing
	}
	return rs.g.blocks[v]
}

func (rs *rootSearch) visit(v int32) {
	rs.order[v], rs.low[v] = rs.counter, rs.counter
	rs.counter++
	rs.stack = append(rs.stack, v)
	rs.onStack[v] = true
	for _, e := range rs.next(v) {
		if !rs.blocking(e) {
			continue
		}
		switch w := e.to; {
		case rs.order[w] == unvisited:
			rs.visit(w)
			rs.low[v] = min(rs.low[v], rs.low[w])
		case rs.onStack[w]:
			rs.low[v] = min(rs.low[v], rs.order[w])
		}
	}
	if rs.low[v] == rs.order[v] {
		rs.closeComponent(v)
	}
}

// closeComponent pops v's component and works out its roots: the union of
// the roots of the components it blocks on, or its own members when it
// blocks on none.
func (rs *rootSearch) closeComponent(v int32) {
	c := int32(len(rs.compMembers))
	var members []int32
	for {
		w := rs.stack[len(rs.stack)-1]
		rs.stack = rs.stack[:len(rs.stack)-1]
		rs.onStack[w] = false
		rs.comp[w] = c
		members = append(members, w)
		if w == v {
			break
		}
	}
	var roots []int32
	upstream := false
	for _, u := range members {
		for _, e := range rs.next(u) {
			if w := e.to; rs.blocking(e) && rs.comp[w] != c {
				upstream = true
				roots = unionSorted(roots, rs.compRoots[rs.comp[w]])
			}
		}
	}
	if !upstream {
		roots = slices.Clone(members)
		slices.Sort(roots)
	}
	rs.compMembers = append(rs.compMembers, members)
	rs.compRoots = append(rs.compRoots, roots)
	rs.compUpstream = append(rs.compUpstream, upstream)
}

// roots gives each failing object its root causes.
func (rs *rootSearch) roots() [][]int32 {
	out := make([][]int32, rs.n)
	for i := range int32(rs.n) {
		if !rs.bad(i) {
			continue
		}
		c := rs.comp[i]
		switch members := rs.compMembers[c]; {
		case rs.compUpstream[c]:
			out[i] = rs.compRoots[c]
		case len(members) > 1:
			// A cycle that nothing upstream fails: the others in it block i.
			out[i] = slices.DeleteFunc(slices.Clone(rs.compRoots[c]), func(v int32) bool { return v == i })
		case slices.ContainsFunc(rs.g.blocks[i], func(e blockEdge) bool { return e.to == i && rs.blocking(e) }):
			out[i] = []int32{i} // i depends on itself
		}
	}
	return out
}

// unionSorted merges two sorted lists without repeats; it returns b itself
// when a is empty, so that the objects blocked by one root share its list.
func unionSorted(a, b []int32) []int32 {
	if len(a) == 0 {
		return b
	}
	out := make([]int32, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			out = append(out, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	return out
}

// render writes the graph's series into one record per object that has
// any: its missing references, its dependents (every object has that
// series when it is on) and its roots, through the same rendering as
// Decode's. The dependents, a walk per node, are counted only when their
// opt-in family is on.
func (g *graph) render(on familySet) []*Record {
	var dependents []int32
	if on.has(dependentsFamily) {
		dependents = g.dependents()
	}
	roots := g.rootCauses()
	out := make([]*Record, 0, len(g.nodes))
	var vals []string
	for i, nd := range g.nodes {
		rec := &Record{Namespace: nd.key.namespace, Name: nd.key.name}
		r := &reader{}
		w := recordWriter{rec: rec, r: r, on: on, object: []string{nd.key.kind, nd.key.name, nd.key.namespace}, values: vals}
		object, err := appendObjectLabels(nil, w.object)
		if err != nil {
			continue // Decode rendered nothing for it either
		}
		rec.object = object
		for _, m := range g.missingOf[i] {
			k := g.missing[m]
			w.add(dependencyMissingFamily, 1, k.kind, k.name, k.namespace)
		}
		if dependents != nil {
			w.add(dependentsFamily, float64(dependents[i]))
		}
		for _, v := range roots[i] {
			k := g.key(v)
			w.add(rootCauseFamily, 1, k.kind, k.name, k.namespace)
		}
		vals = w.values
		if len(rec.series) == 0 {
			continue
		}
		rec.groupByFamily()
		out = append(out, rec)
	}
	return out
}

// graphCache keeps the graph's records for one state of the caches, so
// that a scrape of unchanged caches does no graph work.
type graphCache struct {
	logger *slog.Logger
	// on is the families to render (Decoder.on).
	on familySet

	mu     sync.Mutex
	key    graphKey
	valid  bool
	cached []*Record
	// computed counts the graphs computed, for tests.
	computed int
}

// graphKey names what a graph is computed from: the digests of the
// snapshot's records (order-independent, so that cache order does not
// matter) and which kinds are watched and synced. Status updates that
// change nothing the graph reads (most of them: a reconcile's timestamps,
// revisions, conditions other than Ready) leave it unchanged.
type graphKey struct {
	sum, mixed uint64
	count      int
	kinds      string
}

// keyOf is the key of the snapshot a scrape read.
func keyOf(sc *scrapeState) graphKey {
	var k graphKey
	var b strings.Builder
	for _, ks := range sc.states {
		b.WriteString(ks.Kind.Group)
		b.WriteByte('/')
		b.WriteString(ks.Kind.Kind)
		b.WriteByte('=')
		b.WriteString(strconv.FormatBool(ks.Synced))
		b.WriteByte(';')
		for _, rec := range ks.Records {
			d := rec.graphDigest
			k.sum += d
			k.mixed ^= d * 0x9e3779b97f4a7c15
			k.count++
		}
	}
	k.kinds = b.String()
	return k
}

// records returns the graph's records for the scrape's snapshot, computing
// them only when the caches changed since the last computation.
func (c *graphCache) records(sc *scrapeState, lookup lookupFunc) []*Record {
	if !slices.ContainsFunc(graphFamilies, c.on.has) {
		return nil
	}
	key := keyOf(sc)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.valid && c.key == key {
		return c.cached
	}
	start := time.Now()
	g := newGraph(sc.states, lookup)
	c.cached, c.key, c.valid = g.render(c.on), key, true
	c.computed++
	c.logger.Debug("Computed the dependency graph", "objects", len(g.nodes), "missing", len(g.missing),
		"duration_seconds", time.Since(start).Seconds())
	return c.cached
}
