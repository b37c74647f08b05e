package fleet

import (
	"fmt"
)

// dep is a Kustomization others may depend on.
type dep struct {
	ns, name string
	// ready as kustomize-controller checks a dependency: Ready=True and
	// observedGeneration equal to generation.
	ready bool
}

// Stacks: a source and what consumes it.

func (g *gen) gitApp(ns string, layers int) {
	app := g.pick(appNames)
	repo := g.gitRepository(ns, app)
	if repo == nil {
		return
	}
	g.kustomizations(ns, app, repo, layers)
}

func (g *gen) ociApp(ns string) {
	app := g.pick(appNames)
	repo := g.ociRepository(ns, app, "oci://ghcr.io/acme/manifests/"+app, "latest", false)
	if repo == nil {
		return
	}
	g.kustomizations(ns, app, repo, 1+g.intn(2))
}

func (g *gen) bucketApp(ns string) {
	app := g.pick(appNames)
	if b := g.bucket(ns, app); b != nil {
		g.kustomizations(ns, app, b, 1)
	}
}

func (g *gen) externalArtifactApp(ns string) {
	app := g.pick(appNames)
	if a := g.externalArtifact(ns, app); a != nil {
		g.kustomizations(ns, app, a, 1)
	}
}

// kustomizations splits an app into ordered layers, each depending on the
// one before, as fleet repositories commonly do.
func (g *gen) kustomizations(ns, app string, src *source, layers int) {
	wait := g.chance(0.5)
	var prev *dep
	for i := 0; i < layers; i++ {
		name, path := app, "./deploy/"+app
		if layers > 1 {
			name = app + "-" + kustomizeLayers[i]
			path = "./" + kustomizeLayers[i] + "/" + app
		}
		if prev != nil && g.chance(0.3) {
			prev = nil // not every layer waits for the one before
		}
		prev = g.kustomization(ns, name, app, path, src, prev, wait)
		if prev == nil {
			return
		}
	}
}

func (g *gen) kustomization(ns, base, app, path string, src *source, after *dep, wait bool) *dep {
	if g.full() {
		return nil
	}
	p := g.plan(KindKustomization, ns, base)
	spec := map[string]any{
		"interval":      g.pick([]string{"5m", "10m", "30m", "1h"}),
		"retryInterval": "2m",
		"timeout":       "5m",
		"path":          path,
		"prune":         true,
		"sourceRef":     ref(src.kind, src.ns, src.name, ns),
	}
	healthChecked := wait
	if wait {
		spec["wait"] = true
	} else if g.chance(0.2) {
		healthChecked = true
		spec["healthChecks"] = []any{map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": app, "namespace": ns}}
	}
	if after != nil {
		spec["dependsOn"] = []any{ref("", after.ns, after.name, ns)}
	}

	// A controller that runs first needs an artifact, then ready dependencies.
	variant := ""
	if p.runs() {
		switch {
		case src.art == nil:
			p.st, variant = StateFailing, "ArtifactFailed"
		case after != nil && !after.ready:
			p.st, variant = StateFailing, "DependencyNotReady"
		case p.st == StateStalled:
			p.st = StateFailing
		}
		if p.st == StateFailing && variant == "" {
			variant = g.pick([]string{"BuildFailed", "HealthCheckFailed", "ReconciliationFailed"})
		}
	}
	g.settle(p, true)

	var status map[string]any
	if p.runs() {
		status = g.kustomizationStatus(p, src, app, path, variant, after, healthChecked)
	}
	o := g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": app})
	if o == nil {
		return nil
	}
	o.consumes = objRef{src.kind, src.ns, src.name}
	if after != nil {
		o.dependsOn = objRef{KindKustomization, after.ns, after.name}
	}
	return &dep{ns: ns, name: p.name, ready: p.st == StateReady && p.gen == p.obs}
}

// inventory lists what a Kustomization applied, as kustomize-controller
// records it: <namespace>_<name>_<group>_<kind> and the API version.
func (g *gen) inventory(ns, app string) []any {
	type entry struct{ id, v string }
	base := []entry{
		{ns + "_" + app + "__ServiceAccount", "v1"},
		{ns + "_" + app + "__Service", "v1"},
		{ns + "_" + app + "_apps_Deployment", "v1"},
		{ns + "_" + app + "_autoscaling_HorizontalPodAutoscaler", "v2"},
		{ns + "_" + app + "_networking.k8s.io_Ingress", "v1"},
		{ns + "_" + app + "_policy_PodDisruptionBudget", "v1"},
	}
	n := 2 + g.intn(len(base)-1)
	out := make([]any, 0, n+8)
	if g.chance(0.3) {
		out = append(out, map[string]any{"id": "_" + ns + "__Namespace", "v": "v1"})
	}
	for _, e := range base[:n] {
		out = append(out, map[string]any{"id": e.id, "v": e.v})
	}
	for i := range g.intn(8) {
		out = append(out, map[string]any{"id": fmt.Sprintf("%s_%s-config-%d__ConfigMap", ns, app, i), "v": "v1"})
	}
	return out
}

// Helm stacks.

func (g *gen) pickChart() chart {
	c := charts[g.intn(len(charts))]
	if g.chance(0.3) { // not every cluster runs the latest patch
		c.version = shiftVersion(c.version, -1-g.intn(3))
	}
	return c
}

// helmApp: a HelmRepository (shared per URL in a namespace), a HelmRelease
// with a chart template, and the HelmChart helm-controller makes from it.
func (g *gen) helmApp(ns string) {
	g.templatedRelease(ns, false)
}

// ociHelmRepoApp is helmApp with an OCI HelmRepository, which has no status.
func (g *gen) ociHelmRepoApp(ns string) {
	g.templatedRelease(ns, true)
}

func (g *gen) templatedRelease(ns string, oci bool) {
	if g.room() < 3 { // a release without its HelmChart would be half a stack
		g.gitApp(ns, 1)
		return
	}
	c := g.pickChart()
	repo := g.helmRepository(ns, c, oci)
	if repo == nil {
		return
	}
	name := g.unique(KindHelmRelease, ns, c.name)
	chartName := g.unique(KindHelmChart, ns, ns+"-"+name)
	chartInterval := g.pick([]string{"5m", "10m", "1h"})
	versionSpec := g.pick([]string{c.version, majorRange(c.version), "*"})
	chartArt := g.helmChart(ns, chartName, c, versionSpec, chartInterval, repo, oci)
	hr := map[string]any{"spec": map[string]any{
		"chart":             c.name,
		"version":           versionSpec,
		"interval":          chartInterval,
		"reconcileStrategy": "ChartVersion",
		"sourceRef":         map[string]any{"kind": KindHelmRepository, "name": repo.name},
	}}
	g.helmRelease(ns, name, c, map[string]any{"chart": hr}, chartArt, objRef{KindHelmChart, ns, chartName})
}

// ociHelmApp: an OCIRepository holding a chart, consumed by chartRef.
func (g *gen) ociHelmApp(ns string) {
	if g.room() < 2 {
		g.gitApp(ns, 1)
		return
	}
	c := g.pickChart()
	repo := g.ociRepository(ns, c.name, c.ociURL+"/"+c.name, c.version, true)
	if repo == nil {
		return
	}
	name := g.unique(KindHelmRelease, ns, c.name)
	g.helmRelease(ns, name, c, map[string]any{"chartRef": map[string]any{"kind": KindOCIRepository, "name": repo.name}}, repo.art, objRef{KindOCIRepository, ns, repo.name})
}

func majorRange(v string) string {
	prefix, n, ok := splitVersion(v)
	if !ok {
		return "*"
	}
	return fmt.Sprintf("%s%d.x", prefix, n[0])
}

// helmChart is the HelmChart helm-controller creates for a chart template.
func (g *gen) helmChart(ns, name string, c chart, versionSpec, interval string, repo *source, ociRepo bool) *artifact {
	if g.full() {
		return nil
	}
	p := &planned{kind: KindHelmChart, ns: ns, name: name, st: g.drawState(KindHelmChart)}
	spec := map[string]any{
		"chart":             c.name,
		"version":           versionSpec,
		"interval":          interval,
		"reconcileStrategy": "ChartVersion",
		"sourceRef":         map[string]any{"kind": KindHelmRepository, "name": repo.name},
	}
	// A default HelmRepository without an index leaves nothing to pull from.
	repoMissing := !ociRepo && repo.art == nil
	art := g.newArtifact(storageBase, "helmchart", ns, name, c.version, c.name+"-"+c.version+".tgz")
	pulled := storedMessage(KindHelmChart, c.version, c.name)
	failMsg := fmt.Sprintf("chart pull error: failed to get chart version for remote reference: no '%s' chart with version matching '%s' found", c.name, shiftVersion(c.version, 1))
	if repoMissing && p.runs() {
		p.st = StateFailing
		failMsg = fmt.Sprintf("failed to get source: HelmRepository '%s/%s' is not ready: no artifact available", ns, repo.name)
	}
	g.settle(p, true)
	status, art := g.sourceStatus(p, art, sourceMsgs{
		ready:       pulled,
		readyReason: "ChartPullSucceeded",
		failCond:    "FetchFailed",
		failReason:  "ChartPullError",
		failMsg:     failMsg,
	}, true)
	if status != nil {
		status["observedChartName"] = c.name
		if repo.art != nil {
			status["observedSourceArtifactRevision"] = repo.art.revision
		}
		if repoMissing { // never pulled: no artifact, nothing stored
			delete(status, "artifact")
			status["conditions"] = status["conditions"].([]any)[:1]
			art = nil
		}
	}
	if o := g.emit(p, spec, status, nil); o != nil {
		o.consumes = objRef{KindHelmRepository, repo.ns, repo.name}
	}
	return art
}

// helmRelease makes a HelmRelease whose chart comes from chartArt (a
// HelmChart's or an OCIRepository's artifact; nil when there is none). It
// returns the object, nil when the fleet is full.
func (g *gen) helmRelease(ns, name string, c chart, chartSpec map[string]any, chartArt *artifact, from objRef) *Object {
	if g.full() {
		return nil
	}
	p := &planned{kind: KindHelmRelease, ns: ns, name: name, st: g.drawState(KindHelmRelease), suspended: g.drawSuspended(KindHelmRelease)}
	spec := map[string]any{
		"interval": g.pick([]string{"5m", "10m", "30m", "1h"}),
		"timeout":  "5m",
		"install":  map[string]any{"remediation": map[string]any{"retries": int64(3)}},
		"upgrade":  map[string]any{"remediation": map[string]any{"retries": int64(3), "remediateLastFailure": true, "strategy": "rollback"}},
		"values":   map[string]any{"replicaCount": int64(1 + g.intn(3))},
	}
	for k, v := range chartSpec {
		spec[k] = v
	}
	relNs := ns
	relName := name
	if g.chance(0.2) {
		relNs = name
		spec["targetNamespace"] = relNs
		relName = relNs + "-" + name
	}
	testEnabled := g.chance(0.3)
	if testEnabled {
		spec["test"] = map[string]any{"enable": true}
	}
	driftMode := ""
	if g.chance(0.3) {
		driftMode = g.pick([]string{"enabled", "warn"})
		spec["driftDetection"] = map[string]any{"mode": driftMode}
	}
	variant := ""
	if p.runs() {
		switch {
		case chartArt == nil:
			p.st, variant = StateFailing, "ArtifactFailed"
		case p.st == StateFailing:
			variant = g.pick([]string{"InstallFailed", "UpgradeFailed", "RollbackSucceeded"})
		case p.st == StateReady && driftMode == "enabled" && g.chance(0.3):
			// Found the cluster drifted from the release and is correcting it.
			p.st, variant = StateProgressing, "CorrectingDrift"
		}
	}
	g.settle(p, true)
	if variant == "CorrectingDrift" && !p.suspended {
		p.gen, p.cond = p.obs, p.obs // no spec change: the cluster moved, not the object
	}
	helmChart := ""
	if from.kind == KindHelmChart {
		helmChart = from.ns + "/" + from.name
	}
	var status map[string]any
	if p.runs() {
		status = g.helmReleaseStatus(p, c, chartSpec, chartArt, helmChart, relNs, relName, variant, testEnabled)
	}
	o := g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": c.name})
	if o != nil {
		o.consumes = from
	}
	return o
}
