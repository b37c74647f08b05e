package fleet

import (
	"fmt"
	"strings"
	"time"
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

func (g *gen) kustomizationStatus(p *planned, src *source, app, path, variant string, after *dep, healthChecked bool) map[string]any {
	status := map[string]any{"observedGeneration": p.obs}
	var rev string
	if src.art != nil {
		rev = src.art.revision
	}
	applied := func(r string) string { return "Applied revision: " + r }
	// history[0] is the latest reconciliation.
	appliedAt := g.ago(minute, 2*hour)
	history := []any{}
	addHistory := func(r, result string, last time.Time) {
		first := last.Add(-time.Duration(1+g.intn(240)) * hour)
		history = append(history, map[string]any{
			"digest":                 "sha256:" + g.hex(64),
			"firstReconciled":        ts(first),
			"lastReconciled":         ts(last),
			"lastReconciledDuration": g.duration(300*time.Millisecond, 90*time.Second),
			"lastReconciledStatus":   result,
			"totalReconciliations":   int64(1 + g.intn(3000)),
			"metadata":               map[string]any{"revision": r},
		})
	}
	setApplied := func(r string) {
		status["lastAppliedRevision"] = r
		if origin, ok := src.art.metadata["org.opencontainers.image.revision"].(string); ok && src.art.revision == r {
			status["lastAppliedOriginRevision"] = origin
		}
		status["inventory"] = map[string]any{"entries": g.inventory(p.ns, app)}
	}
	since := g.ago(2*hour, 20*day)
	switch p.st {
	case StateReady:
		setApplied(rev)
		status["lastAttemptedRevision"] = rev
		conds := []any{cond("Ready", "True", "ReconciliationSucceeded", applied(rev), p.cond, since)}
		if healthChecked {
			conds = append(conds, cond("Healthy", "True", "Succeeded", "Health check passed in "+g.duration(time.Second, 3*minute), p.cond, since))
		}
		status["conditions"] = conds
		addHistory(rev, "ReconciliationSucceeded", appliedAt)
		if g.chance(0.5) {
			addHistory(g.olderRevision(rev), "ReconciliationSucceeded", appliedAt.Add(-time.Duration(1+g.intn(72))*hour))
		}
	case StateProgressing:
		setApplied(rev)
		status["lastAttemptedRevision"] = rev
		msg := "Reconciliation in progress"
		started := g.ago(0, 2*minute)
		status["conditions"] = []any{
			cond("Reconciling", "True", "Progressing", msg, p.cond, started),
			cond("Ready", "Unknown", "Progressing", msg, p.cond, started),
		}
		addHistory(rev, "ReconciliationSucceeded", appliedAt)
	case StateFailing:
		failedAt := g.ago(minute, 3*hour)
		var msg string
		switch variant {
		case "ArtifactFailed":
			msg = "Source artifact not found, retrying in 30s"
		case "DependencyNotReady":
			msg = fmt.Sprintf("dependency '%s/%s' is not ready", after.ns, after.name)
			if g.chance(0.6) { // it had been applied before the dependency broke
				old := g.olderRevision(rev)
				setApplied(old)
				status["lastAttemptedRevision"] = old
				addHistory(old, "ReconciliationSucceeded", appliedAt.Add(-6*hour))
			}
		case "BuildFailed":
			msg = fmt.Sprintf("kustomize build failed: accumulating resources: accumulation err='accumulating resources from '%s.yaml': open /tmp/kustomization-%s/%s/%s.yaml: no such file or directory': must build at directory: not a valid directory", app, g.hex(9), strings.TrimPrefix(path, "./"), app)
		case "HealthCheckFailed":
			msg = fmt.Sprintf("health check failed after 5m0s: timeout waiting for: [Deployment/%s/%s status: 'InProgress']", p.ns, app)
		case "ReconciliationFailed":
			// The apply error's message ends in a newline (recorded from
			// kustomize-controller v1.9.4).
			msg = fmt.Sprintf("Deployment/%s/%s dry-run failed (Invalid): Deployment.apps \"%s\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"%s\"}}: field is immutable\n", p.ns, app, app, app)
		}
		conds := []any{cond("Ready", "False", variant, msg, p.cond, failedAt)}
		if variant != "ArtifactFailed" && variant != "DependencyNotReady" {
			// reconcile marked Reconciling when it began; finalizeStatus
			// turns it into ProgressingWithRetry beside the failed Ready
			// (KC kustomization_controller.go). The checks before
			// reconcile (source, dependencies) return without it.
			conds = append([]any{cond("Reconciling", "True", "ProgressingWithRetry", fmt.Sprintf("Building manifests for revision %s with a timeout of 5m0s", rev), p.cond, failedAt)}, conds...)
		}
		switch variant {
		case "BuildFailed", "ReconciliationFailed":
			// The new revision failed; the previous one stays applied.
			old := g.olderRevision(rev)
			setApplied(old)
			status["lastAttemptedRevision"] = rev
			addHistory(rev, variant, failedAt)
			if variant == "BuildFailed" {
				// kustomize-controller records a history entry only after
				// a successful build (KC KustomizationReconciler.reconcile,
				// docs/flux-semantics.md rule 8). The entry is still drawn,
				// so that each seed keeps giving the same fleet.
				history = history[:len(history)-1]
			}
			addHistory(old, "ReconciliationSucceeded", failedAt.Add(-time.Duration(1+g.intn(48))*hour))
		case "HealthCheckFailed":
			setApplied(rev)
			status["lastAttemptedRevision"] = rev
			conds = append(conds, cond("Healthy", "False", "HealthCheckFailed", msg, p.cond, failedAt))
			addHistory(rev, "HealthCheckFailed", failedAt)
		}
		status["conditions"] = conds
		if _, applied := status["lastAppliedRevision"]; !applied {
			// Only a Ready=True attempt moves observedGeneration
			// (finalizeStatus), and the API's default is -1.
			status["observedGeneration"] = int64(-1)
		}
	}
	if len(history) > 0 {
		status["history"] = history
	}
	return status
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

func (g *gen) helmReleaseStatus(p *planned, c chart, chartSpec map[string]any, chartArt *artifact, helmChart, relNs, relName, variant string, testEnabled bool) map[string]any {
	status := map[string]any{
		"observedGeneration":      p.obs,
		"lastAttemptedGeneration": p.cond,
		"storageNamespace":        p.ns, // Helm's storage stays with the HelmRelease by default
	}
	if helmChart != "" {
		status["helmChart"] = helmChart
	}
	_, ociChart := chartSpec["chartRef"]
	configDigest := "sha256:" + g.hex(64)
	status["lastAttemptedConfigDigest"] = configDigest

	// The chart version being released, and the revision it is known by.
	version := c.version
	revision := func(v string) string { return v }
	if ociChart && chartArt != nil {
		// helm-controller appends the first 12 characters of the OCI digest.
		digest := chartArt.revision[strings.Index(chartArt.revision, "@sha256:")+len("@sha256:"):]
		revision = func(v string) string { return v + "+" + digest[:12] }
		status["lastAttemptedRevisionDigest"] = "sha256:" + digest
	}
	older := shiftVersion(version, -1)
	full := func(v int64) string { return fmt.Sprintf("%s/%s.v%d", relNs, relName, v) }

	deployedAt := g.ago(10*minute, 20*day)
	snap := func(v int64, st, action, chartVersion string, at time.Time) map[string]any {
		s := map[string]any{
			"name":         relName,
			"namespace":    relNs,
			"version":      v,
			"status":       st,
			"action":       action,
			"chartName":    c.name,
			"chartVersion": chartVersion,
			"appVersion":   c.appVersion,
			"configDigest": configDigest,
			"digest":       "sha256:" + g.hex(64),
			// Helm copies the first install's time into every version
			// (helm.sh/helm/v4 pkg/action upgrade.go, rollback.go).
			"firstDeployed": ts(deployedAt.Add(-90 * 24 * hour)),
			"lastDeployed":  ts(at),
		}
		if ociChart && chartArt != nil {
			s["ociDigest"] = "sha256:" + g.hex(64)
		}
		if testEnabled && st == "deployed" {
			s["testHooks"] = map[string]any{relName + "-test-connection": map[string]any{
				"lastStarted": ts(at.Add(10 * time.Second)), "lastCompleted": ts(at.Add(25 * time.Second)), "phase": "Succeeded",
			}}
		}
		return s
	}
	action := func(v int64) string {
		if v == 1 {
			return "install"
		}
		return "upgrade"
	}
	succeeded := func(v int64, chartVersion string) (string, string) {
		if v == 1 {
			return "InstallSucceeded", fmt.Sprintf("Helm install succeeded for release %s with chart %s@%s", full(v), c.name, chartVersion)
		}
		return "UpgradeSucceeded", fmt.Sprintf("Helm upgrade succeeded for release %s with chart %s@%s", full(v), c.name, chartVersion)
	}
	v := int64(1)
	if g.chance(0.6) {
		v = int64(2 + g.intn(14))
	}
	setAttempt := func(chartVersion string, act string) {
		status["lastAttemptedRevision"] = revision(chartVersion)
		status["lastAttemptedReleaseAction"] = act
		status["lastAttemptedReleaseActionDuration"] = g.duration(2*time.Second, 4*minute)
	}
	readyConds := func(v int64) []any {
		reason, msg := succeeded(v, version)
		conds := []any{
			cond("Ready", "True", reason, msg, p.cond, deployedAt),
			cond("Released", "True", reason, msg, p.cond, deployedAt),
		}
		if testEnabled {
			tmsg := fmt.Sprintf("Helm test succeeded for release %s with chart %s@%s: 1 test hook completed successfully", full(v), c.name, version)
			conds = append(conds, cond("TestSuccess", "True", "TestSucceeded", tmsg, p.cond, deployedAt))
		}
		return conds
	}
	history := []any{}
	failedAt := g.ago(minute, 6*hour)
	failErr := g.pick([]string{
		"context deadline exceeded",
		fmt.Sprintf("resource Deployment/%s/%s not ready. status: InProgress, message: Available: 0/2", relNs, relName),
		fmt.Sprintf("cannot patch \"%s\" with kind Deployment: Deployment.apps \"%s\" is invalid: spec.template.spec.containers[0].image: Required value", relName, relName),
	})

	switch {
	case p.st == StateReady || p.st == StateProgressing:
		setAttempt(version, action(v))
		history = append(history, snap(v, "deployed", action(v), version, deployedAt))
		if v > 1 {
			history = append(history, snap(v-1, "superseded", action(v-1), older, deployedAt.Add(-72*hour)))
		}
		status["conditions"] = readyConds(v)
		if p.st == StateProgressing {
			// helm-controller's words: "Running '<action>' <type> action with timeout of <t>".
			running := "Running 'upgrade' release action with timeout of 5m0s"
			readyMsg := running
			if variant == "CorrectingDrift" {
				running = "Running 'correct cluster drift' drift correction action with timeout of 5m0s"
				readyMsg = "correcting cluster drift"
			}
			started := g.ago(0, 2*minute)
			status["conditions"] = []any{
				cond("Reconciling", "True", "Progressing", running, p.cond, started),
				cond("Ready", "Unknown", "Progressing", readyMsg, p.cond, started),
				status["conditions"].([]any)[1],
			}
		}
		status["inventory"] = map[string]any{"entries": g.inventory(relNs, relName)}
	case variant == "ArtifactFailed":
		src := "HelmChart '" + helmChart + "'"
		if ociChart {
			src = fmt.Sprintf("OCIRepository '%s/%s'", p.ns, chartSpec["chartRef"].(map[string]any)["name"])
		}
		// helm-controller's reason for a source that exists but is not
		// ready (HC helmrelease_controller.go reconcileRelease,
		// isSourceReady); ArtifactFailed is for one it cannot get.
		status["conditions"] = []any{cond("Ready", "False", "SourceNotReady", src+" is not ready: latest generation of object has not been reconciled", p.cond, failedAt)}
	case variant == "InstallFailed" || (p.st == StateStalled && v == 1):
		setAttempt(version, "install")
		msg := fmt.Sprintf("Helm install failed for release %s/%s with chart %s@%s: %s", relNs, relName, c.name, version, failErr)
		n := int64(1 + g.intn(2))
		if p.st == StateStalled {
			// Out of install retries (3), the last failure remediated by
			// uninstalling (remediateLastFailure defaults to true when
			// retries > 0): HC uninstall_remediation.go, atomic_release.go
			// MarkStalled RetriesExceeded.
			n = 4
			uninstalled := fmt.Sprintf("Helm uninstall remediation for release %s with chart %s@%s succeeded", full(1), c.name, version)
			history = append(history, snap(1, "uninstalled", "uninstall-remediation", version, failedAt))
			status["conditions"] = []any{
				cond("Stalled", "True", "RetriesExceeded", fmt.Sprintf("Failed to install after %d attempt(s)", n), p.cond, failedAt),
				cond("Ready", "False", "UninstallSucceeded", uninstalled, p.cond, failedAt),
				cond("Released", "False", "InstallFailed", msg, p.cond, failedAt),
				cond("Remediated", "True", "UninstallSucceeded", uninstalled, p.cond, failedAt),
			}
		} else {
			history = append(history, snap(1, "failed", "install", version, failedAt))
			status["conditions"] = []any{cond("Ready", "False", "InstallFailed", msg, p.cond, failedAt), cond("Released", "False", "InstallFailed", msg, p.obs, failedAt)}
		}
		status["installFailures"], status["failures"] = n, n
	case variant == "UpgradeFailed":
		// The source moved to version; the upgrade to it failed and will
		// be retried (Reconciling ProgressingWithRetry, HC
		// atomic_release.go).
		if v < 2 {
			v = 2
		}
		setAttempt(version, "upgrade")
		history = append(history,
			snap(v, "failed", "upgrade", version, failedAt),
			snap(v-1, "deployed", action(v-1), older, deployedAt.Add(-48*hour)))
		msg := fmt.Sprintf("Helm upgrade failed for release %s/%s with chart %s@%s: %s", relNs, relName, c.name, version, failErr)
		n := int64(1 + g.intn(2))
		status["conditions"] = []any{
			cond("Reconciling", "True", "ProgressingWithRetry", msg, p.cond, failedAt),
			cond("Ready", "False", "UpgradeFailed", msg, p.cond, failedAt),
			cond("Released", "False", "UpgradeFailed", msg, p.obs, failedAt),
		}
		status["upgradeFailures"], status["failures"] = n, n
		status["inventory"] = map[string]any{"entries": g.inventory(relNs, relName)}
	case variant == "RollbackSucceeded" || p.st == StateStalled:
		// An upgrade failed and was rolled back (upgrade.remediation:
		// retries 3, strategy rollback). Between attempts helm-controller
		// retries at the next interval (Reconciling ProgressingWithRetry);
		// once the retries are spent it stalls, the last failure rolled
		// back too (remediateLastFailure). Shapes recorded from
		// helm-controller v1.6.2 (sandbox/e2e/testdata/recorded/
		// recorded-helm-upgrade-rollback-stalled.yaml).
		if v < 3 {
			v = 3
		}
		setAttempt(version, "upgrade")
		history = append(history,
			snap(v, "deployed", "rollback", older, failedAt),
			snap(v-1, "failed", "upgrade", version, failedAt.Add(-5*minute)),
			// helm-controller marks every release the rollback touches
			// with action rollback, the restored one included (HC
			// rollback_remediation.go observeRollback).
			snap(v-2, "superseded", "rollback", older, deployedAt.Add(-48*hour)))
		upgradeMsg := fmt.Sprintf("Helm upgrade failed for release %s/%s with chart %s@%s: %s", relNs, relName, c.name, version, failErr)
		rollbackMsg := fmt.Sprintf("Helm rollback to previous release %s with chart %s@%s succeeded", full(v-2), c.name, older)
		n, first := int64(1), cond("Reconciling", "True", "ProgressingWithRetry", rollbackMsg, p.cond, failedAt)
		if p.st == StateStalled {
			n = 4
			first = cond("Stalled", "True", "RetriesExceeded", fmt.Sprintf("Failed to upgrade after %d attempt(s)", n), p.cond, failedAt)
		}
		status["conditions"] = []any{
			first,
			cond("Ready", "False", "RollbackSucceeded", rollbackMsg, p.cond, failedAt),
			cond("Released", "False", "UpgradeFailed", upgradeMsg, p.cond, failedAt),
			cond("Remediated", "True", "RollbackSucceeded", rollbackMsg, p.cond, failedAt),
		}
		status["upgradeFailures"], status["failures"] = n, n
		status["inventory"] = map[string]any{"entries": g.inventory(relNs, relName)}
	}
	if len(history) > 0 {
		status["history"] = history
	}
	return status
}
