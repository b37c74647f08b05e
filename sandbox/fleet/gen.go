package fleet

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const (
	minute = time.Minute
	hour   = time.Hour
	day    = 24 * time.Hour
)

// gen draws the fleet from one random stream, so a seed fixes it.
type gen struct {
	r     *rand.Rand
	now   time.Time
	limit int
	out   []*Object
	reg   *registry
	// seed is the fleet's, for streams of their own (fork).
	seed int64
	// force, when set, is the state of every object planned, none
	// suspended, instead of drawn ones.
	force State
}

// registry remembers what later objects may reference or must not collide with.
type registry struct {
	names     map[string]bool               // kind/namespace/name
	gitRepos  map[string][]*source          // namespace → GitRepositories
	helmRepos map[string]map[string]*source // namespace → URL → HelmRepository
}

func (r *registry) clone() *registry {
	c := &registry{names: map[string]bool{}, gitRepos: map[string][]*source{}, helmRepos: map[string]map[string]*source{}}
	for k, v := range r.names {
		c.names[k] = v
	}
	for ns, l := range r.gitRepos {
		c.gitRepos[ns] = append([]*source(nil), l...)
	}
	for ns, m := range r.helmRepos {
		c.helmRepos[ns] = map[string]*source{}
		for u, s := range m {
			c.helmRepos[ns][u] = s
		}
	}
	return c
}

// source is a generated source object that others can reference.
type source struct {
	kind, ns, name string
	art            *artifact // nil: the source has no artifact to consume
}

type artifact struct {
	revision string
	digest   string
	path     string
	url      string
	size     int64
	updated  time.Time
	metadata map[string]any
}

func (a *artifact) toMap() map[string]any {
	m := map[string]any{
		"revision":       a.revision,
		"digest":         a.digest,
		"path":           a.path,
		"url":            a.url,
		"size":           a.size,
		"lastUpdateTime": ts(a.updated),
	}
	if a.metadata != nil {
		m["metadata"] = a.metadata
	}
	return m
}

func newGen(seed int64, now time.Time, limit int) *gen {
	return &gen{
		// The second PCG word is a fixed odd constant: the seed alone picks the stream.
		r:     rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15)),
		now:   now,
		limit: limit,
		reg:   &registry{names: map[string]bool{}, gitRepos: map[string][]*source{}, helmRepos: map[string]map[string]*source{}},
		seed:  seed,
	}
}

// stack adds one group of objects that belong together into a namespace.
type stack struct {
	weight int
	add    func(g *gen, ns string)
}

// stacks is the mix of a fleet; the first of each kind of stack also seeds
// a new fleet so that every kind appears even in a small one.
var stacks = []stack{
	{30, func(g *gen, ns string) { g.gitApp(ns, 1+g.intn(len(kustomizeLayers))) }},
	{22, (*gen).helmApp},
	{8, (*gen).ociHelmApp},
	{5, (*gen).ociHelmRepoApp},
	{4, (*gen).bucketApp},
	{3, (*gen).externalArtifactApp},
	{9, (*gen).imageAutomation},
	{7, (*gen).notifications},
	{10, (*gen).ociApp},
}

func (g *gen) fill(namespaces []string) {
	// One of each first, with the smallest shapes, for coverage.
	coverage := []func(ns string){
		func(ns string) { g.gitApp(ns, 1) },
		g.helmApp, g.ociHelmApp, g.ociHelmRepoApp, g.bucketApp,
		g.externalArtifactApp,
		func(ns string) { g.imageAutomationN(ns, 1) },
		func(ns string) { g.notificationsN(ns, 1) },
	}
	for i, add := range coverage {
		if g.full() {
			return
		}
		add(namespaces[i%len(namespaces)])
	}
	g.operator(namespaces[0])      // sandbox/fleet/operator.go
	g.dependencyStates(namespaces) // sandbox/fleet/dependencies.go
	total := 0
	for _, s := range stacks {
		total += s.weight
	}
	for !g.full() {
		ns := namespaces[g.intn(len(namespaces))]
		x := g.intn(total)
		for _, s := range stacks {
			if x < s.weight {
				s.add(g, ns)
				break
			}
			x -= s.weight
		}
	}
	g.reportReconcilers()
}

func (g *gen) full() bool { return len(g.out) >= g.limit }
func (g *gen) room() int  { return g.limit - len(g.out) }

// Random helpers. Every draw goes through g.r, in a fixed order.

func (g *gen) intn(n int) int            { return g.r.IntN(n) }
func (g *gen) chance(p float64) bool     { return g.r.Float64() < p }
func (g *gen) pick(list []string) string { return list[g.r.IntN(len(list))] }

func (g *gen) hex(n int) string {
	var b strings.Builder
	for b.Len() < n {
		fmt.Fprintf(&b, "%016x", g.r.Uint64())
	}
	return b.String()[:n]
}

// ago is a moment between lo and hi before now, to the second.
func (g *gen) ago(lo, hi time.Duration) time.Time {
	d := lo + time.Duration(g.r.Int64N(int64(hi-lo)+1))
	return g.now.Add(-d).Truncate(time.Second)
}

func (g *gen) duration(lo, hi time.Duration) string {
	d := lo + time.Duration(g.r.Int64N(int64(hi-lo)+1))
	return d.Truncate(time.Millisecond).String()
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// unique returns base, or base-2, base-3... if that name is taken for the kind.
func (g *gen) unique(kind, ns, base string) string {
	name := base
	for i := 2; g.reg.names[kind+"/"+ns+"/"+name]; i++ {
		name = base + "-" + strconv.Itoa(i)
	}
	g.reg.names[kind+"/"+ns+"/"+name] = true
	return name
}

// drawState picks what the controller last did with an object of the kind.
func (g *gen) drawState(kind string) State {
	if !hasStatusSubresource(kind) {
		return StateNoStatus
	}
	if g.force != "" {
		return g.force
	}
	x := g.intn(100)
	switch {
	case x < 76:
		return StateReady
	case x < 86:
		return StateFailing
	case x < 91:
		if kind == KindExternalArtifact { // has no generation to lag behind
			return StateReady
		}
		return StateProgressing
	case x < 95:
		if stallable[kind] {
			return StateStalled
		}
		return StateFailing
	default:
		return StateUnreconciled
	}
}

func (g *gen) drawSuspended(kind string) bool {
	if g.force != "" {
		return false
	}
	return kind != KindExternalArtifact && kind != KindHelmChart && g.chance(0.05)
}

// generations returns metadata.generation, status.observedGeneration and
// the generation the conditions of the controller's last attempt carry, as
// docs/flux-semantics.md (rule 2) says the controllers write them:
//   - every attempt stamps Ready (and Reconciling) with the generation it
//     acted on, failed attempts included;
//   - status.observedGeneration moves only when an attempt ends well, so a
//     spec change that is still reconciling, or that failed, leaves it behind;
//   - a suspension is itself a spec change that the controller then skips:
//     source-controller still rewrites Ready and moves observedGeneration,
//     helm-controller moves observedGeneration, and the other controllers
//     move it only when Ready was True; none of those but source-controller
//     touches the conditions.
//
// Only kinds whose spec Apply knows how to edit (see earlierSpec) get
// generations above 1.
func (g *gen) generations(kind string, st State, suspended, editable bool) (generation, observed, conds int64) {
	if !editable || st == StateNoStatus || st == StateUnreconciled {
		return 1, 1, 1
	}
	observed = 1
	if g.chance(0.3) {
		observed += int64(1 + g.intn(4))
	}
	attempted := observed
	if st == StateProgressing || (st == StateFailing && g.chance(0.3)) {
		attempted++ // a spec change being reconciled, or one that failed
	}
	if !suspended {
		return attempted, observed, attempted
	}
	generation = attempted + 1
	switch {
	case groupOf(kind) == groupSource:
		return generation, generation, generation
	case kind == KindHelmRelease || st == StateReady:
		return generation, generation, attempted
	}
	return generation, observed, attempted
}

// planned carries one object's drawn fate through its builder.
type planned struct {
	kind, ns, name string
	st             State
	suspended      bool
	// gen is metadata.generation, obs status.observedGeneration, and cond
	// the generation the conditions of the last attempt carry.
	gen, obs, cond int64
}

func (g *gen) plan(kind, ns, base string) *planned {
	return &planned{kind: kind, ns: ns, name: g.unique(kind, ns, base), st: g.drawState(kind), suspended: g.drawSuspended(kind)}
}

// settle fixes the generations once the builder has decided the final state.
func (g *gen) settle(p *planned, editable bool) {
	if !editable && p.st == StateProgressing {
		p.st = StateReady // nothing can make its generation move
	}
	p.gen, p.obs, p.cond = g.generations(p.kind, p.st, p.suspended, editable)
}

// runs reports whether the controller has acted on the object.
func (p *planned) runs() bool {
	return p.st == StateReady || p.st == StateFailing || p.st == StateProgressing || p.st == StateStalled
}

func cond(typ, status, reason, msg string, generation int64, t time.Time) map[string]any {
	return map[string]any{
		"type":               typ,
		"status":             status,
		"reason":             reason,
		"message":            msg,
		"observedGeneration": generation,
		"lastTransitionTime": ts(t),
	}
}

// finalized are the kinds whose controllers add finalizers.fluxcd.io
// before their first reconciliation (SC <kind>_controller.go Reconcile,
// "Add finalizer first if not exist"; KC and HC the same), as the real
// controllers did in the recordings (sandbox/e2e/testdata/recorded). An OCI
// HelmRepository is static: source-controller removes the finalizer
// (SC helmrepository_controller.go migrationToStatic).
var finalized = map[string]bool{
	KindGitRepository: true, KindOCIRepository: true, KindHelmRepository: true, KindHelmChart: true,
	KindBucket: true, KindKustomization: true, KindHelmRelease: true,
}

// emit adds the object unless the fleet is full. status is dropped for
// states in which the controller has written none.
func (g *gen) emit(p *planned, spec, status map[string]any, labels map[string]string) *Object {
	if g.full() {
		return nil
	}
	if p.suspended {
		spec["suspend"] = true
	}
	meta := map[string]any{"name": p.name, "namespace": p.ns}
	l := map[string]any{
		"kustomize.toolkit.fluxcd.io/name":      "flux-system",
		"kustomize.toolkit.fluxcd.io/namespace": "flux-system",
	}
	for k, v := range labels {
		l[k] = v
	}
	meta["labels"] = l
	group := groupOf(p.kind)
	obj := map[string]any{
		"apiVersion": group + "/" + schemaVersions[group],
		"kind":       p.kind,
		"metadata":   meta,
		"spec":       spec,
	}
	if status != nil && p.st != StateUnreconciled && p.st != StateNoStatus {
		obj["status"] = status
		if finalized[p.kind] && spec["type"] != "oci" {
			meta["finalizers"] = []any{"finalizers.fluxcd.io"}
		}
	}
	if p.gen == 0 {
		p.gen, p.obs, p.cond = 1, 1, 1
	}
	o := &Object{Group: group, Kind: p.kind, State: p.st, Suspended: p.suspended, Generation: p.gen, Object: &unstructured.Unstructured{Object: obj}}
	g.out = append(g.out, o)
	return o
}

// Revisions.

func splitVersion(v string) (prefix string, nums [3]int, ok bool) {
	if strings.HasPrefix(v, "v") {
		prefix, v = "v", v[1:]
	}
	parts := strings.SplitN(v, ".", 3)
	if len(parts) != 3 {
		return "", nums, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return "", nums, false
		}
		nums[i] = n
	}
	return prefix, nums, true
}

// shiftVersion moves a semver's patch by d (never below zero, borrowing from
// the minor version when needed).
func shiftVersion(v string, d int) string {
	prefix, n, ok := splitVersion(v)
	if !ok {
		return v
	}
	n[2] += d
	if n[2] < 0 {
		if n[1] > 0 {
			n[1]--
			n[2] = 9
		} else {
			n[2] = 0
		}
	}
	return fmt.Sprintf("%s%d.%d.%d", prefix, n[0], n[1], n[2])
}

// olderRevision makes the revision an artifact had before rev.
func (g *gen) olderRevision(rev string) string {
	switch {
	case strings.Contains(rev, "@sha1:"):
		return rev[:strings.Index(rev, "@sha1:")] + "@sha1:" + g.hex(40)
	case strings.Contains(rev, "@sha256:"):
		return rev[:strings.Index(rev, "@sha256:")] + "@sha256:" + g.hex(64)
	case strings.HasPrefix(rev, "sha256:"):
		return "sha256:" + g.hex(64)
	case strings.HasPrefix(rev, "sha1:"):
		return "sha1:" + g.hex(40)
	default:
		return shiftVersion(rev, -1)
	}
}

// newArtifact is an artifact as source-controller stores it: file is the
// file name under kind/namespace/name, with %s replaced by the digest.
func (g *gen) newArtifact(storage, kindDir, ns, name, rev, file string) *artifact {
	hex := g.hex(64)
	if strings.Contains(file, "%s") {
		file = fmt.Sprintf(file, hex)
	}
	path := kindDir + "/" + ns + "/" + name + "/" + file
	return &artifact{
		revision: rev,
		digest:   "sha256:" + hex,
		path:     path,
		url:      storage + path,
		size:     int64(2_000 + g.intn(4_000_000)),
		updated:  g.ago(minute, 72*hour),
	}
}
