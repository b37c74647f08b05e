package fleet

import (
	"fmt"
	"math/rand/v2"
)

// ref is a reference object as Flux's APIs write one: kind (when given),
// name, and the namespace only when it is not the referring object's (from).
func ref(kind, ns, name, from string) map[string]any {
	m := map[string]any{"name": name}
	if kind != "" {
		m["kind"] = kind
	}
	if ns != from {
		m["namespace"] = ns
	}
	return m
}

// fork is a generator that adds to g's fleet from a random stream of its
// own, picked by salt, so that what it draws leaves g's stream, and so the
// objects g makes after it, as they were.
func (g *gen) fork(salt uint64) *gen {
	return &gen{r: rand.New(rand.NewPCG(uint64(g.seed), salt)), now: g.now, limit: g.limit, out: g.out, reg: g.reg, seed: g.seed}
}

// Platform objects are named apart from appNames and charts, so that no
// later object of the fleet is renamed to make room for them.
const (
	platformSource = "platform"
	platformCharts = "platform-charts"
	platformCRDs   = "platform-crds"
	platformApps   = "platform-apps"
	platformDB     = "platform-db"
	platformAPI    = "platform-api"
	// platformCache is named by platform-api's dependsOn and never made.
	platformCache = "platform-cache"
)

// dependencyStates adds the shapes the dependency graph is proven on (issue
// 12), whatever the seed: two sources that have never fetched an artifact
// and what they block, across two namespaces when the fleet has them.
//
//	OCIRepository ns/platform          Failing, no artifact
//	  Kustomization ns/platform-crds   ArtifactFailed (sourceRef)
//	  Kustomization other/platform-apps  ArtifactFailed (cross-namespace
//	                                   sourceRef; dependsOn ns/platform-crds)
//	OCIRepository ns/platform-charts   Failing, no artifact
//	  HelmRelease ns/platform-db       SourceNotReady (chartRef)
//	  HelmRelease other/platform-api   DependencyNotReady (dependsOn
//	                                   ns/platform-db and platform-cache,
//	                                   which does not exist; chartRef
//	                                   ns/platform-charts)
//
// kustomize-controller needs a source artifact before it looks at dependsOn,
// so both Kustomizations are ArtifactFailed; helm-controller checks
// dependsOn first, so platform-api waits on platform-db (docs/flux-semantics.md,
// rule 10). It draws from a stream of its own (fork) and registers no
// source for later stacks to pick, so the rest of the fleet is what the seed
// made before, less the objects these displace at the end.
func (g *gen) dependencyStates(namespaces []string) {
	ns, other := namespaces[0], namespaces[1%len(namespaces)]
	s := g.fork(0xdeb5)
	s.force = StateFailing
	defer func() { g.out = s.out }()

	manifests := s.neverFetched(s.ociRepository(ns, platformSource, "oci://ghcr.io/acme/manifests/"+platformSource, "latest", false))
	if manifests == nil {
		return
	}
	crds := s.kustomization(ns, platformCRDs, platformSource, "./crds", manifests, nil, false)
	if crds == nil {
		return
	}
	if s.kustomization(other, platformApps, platformSource, "./apps", manifests, crds, false) == nil {
		return
	}

	c := s.pickChart()
	charts := s.neverFetched(s.ociRepository(ns, platformCharts, c.ociURL+"/"+c.name, c.version, true))
	if charts == nil {
		return
	}
	db := s.helmRelease(ns, platformDB, c, map[string]any{"chartRef": ref(KindOCIRepository, ns, platformCharts, ns)}, nil, objRef{KindOCIRepository, ns, platformCharts})
	if db == nil {
		return
	}
	api := s.helmRelease(other, platformAPI, c, map[string]any{"chartRef": ref(KindOCIRepository, ns, platformCharts, other)}, nil, objRef{KindOCIRepository, ns, platformCharts})
	if api == nil {
		return
	}
	// helm-controller's checkDependencies, in order: the first dependency
	// that is not ready is named, and nothing past it is read.
	api.Object.Object["spec"].(map[string]any)["dependsOn"] = []any{ref("", ns, platformDB, other), ref("", other, platformCache, other)}
	api.dependsOn = refOf(db)
	api.dangling = objRef{KindHelmRelease, other, platformCache}
	if ready := plannedCond(api, "Ready"); ready != nil {
		ready["reason"] = "DependencyNotReady"
		ready["message"] = fmt.Sprintf("dependency '%s/%s' is not ready", ns, platformDB)
	}
}

// neverFetched turns the source just emitted, failing, into one that has
// never stored an artifact: source-controller's status without artifact,
// URL or ArtifactInStorage. It returns the source for consumers, or nil when
// the fleet was full.
func (g *gen) neverFetched(src *source) *source {
	if src == nil || len(g.out) == 0 {
		return nil
	}
	o := g.out[len(g.out)-1]
	if st := o.Status(); st != nil {
		// What source-controller records of a stored artifact.
		for _, k := range []string{"artifact", "url", "observedLayerSelector"} {
			delete(st, k)
		}
		conds, _ := st["conditions"].([]any)
		kept := conds[:0]
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] != "ArtifactInStorage" {
				kept = append(kept, c)
			}
		}
		st["conditions"] = kept
	}
	src.art = nil
	return src
}

// plannedCond is the condition of type typ in the object's planned
// status, nil when it has none.
func plannedCond(o *Object, typ string) map[string]any {
	conds, _ := o.Status()["conditions"].([]any)
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == typ {
			return m
		}
	}
	return nil
}
