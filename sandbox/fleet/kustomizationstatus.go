package fleet

import (
	"fmt"
	"strings"
	"time"
)

// ksStatus builds a Kustomization's status as kustomize-controller writes
// it, one shape per planned state and variant.
type ksStatus struct {
	g         *gen
	p         *planned
	src       *source
	app, path string
	rev       string // the source's artifact revision
	status    map[string]any
	history   []any // history[0] is the latest reconciliation
	appliedAt time.Time
}

func (g *gen) kustomizationStatus(p *planned, src *source, app, path, variant string, after *dep, healthChecked bool) map[string]any {
	k := &ksStatus{g: g, p: p, src: src, app: app, path: path, status: map[string]any{"observedGeneration": p.obs}, history: []any{}}
	if src.art != nil {
		k.rev = src.art.revision
	}
	k.appliedAt = g.ago(minute, 2*hour)
	since := g.ago(2*hour, 20*day)
	switch p.st {
	case StateReady:
		k.ready(since, healthChecked)
	case StateProgressing:
		k.progressing()
	case StateFailing:
		k.failing(variant, after)
	}
	if len(k.history) > 0 {
		k.status["history"] = k.history
	}
	return k.status
}

func (k *ksStatus) addHistory(r, result string, last time.Time) {
	g := k.g
	first := last.Add(-time.Duration(1+g.intn(240)) * hour)
	k.history = append(k.history, map[string]any{
		"digest":                 "sha256:" + g.hex(64),
		"firstReconciled":        ts(first),
		"lastReconciled":         ts(last),
		"lastReconciledDuration": g.duration(300*time.Millisecond, 90*time.Second),
		"lastReconciledStatus":   result,
		"totalReconciliations":   int64(1 + g.intn(3000)),
		"metadata":               map[string]any{"revision": r},
	})
}

// setApplied records r as applied, and attempted.
func (k *ksStatus) setApplied(r, attempted string) {
	k.status["lastAppliedRevision"] = r
	if origin, ok := k.src.art.metadata["org.opencontainers.image.revision"].(string); ok && k.src.art.revision == r {
		k.status["lastAppliedOriginRevision"] = origin
	}
	k.status["inventory"] = map[string]any{"entries": k.g.inventory(k.p.ns, k.app)}
	k.status["lastAttemptedRevision"] = attempted
}

func (k *ksStatus) ready(since time.Time, healthChecked bool) {
	g, p, rev := k.g, k.p, k.rev
	k.setApplied(rev, rev)
	conds := []any{cond("Ready", "True", "ReconciliationSucceeded", "Applied revision: "+rev, p.cond, since)}
	if healthChecked {
		conds = append(conds, cond("Healthy", "True", "Succeeded", "Health check passed in "+g.duration(time.Second, 3*minute), p.cond, since))
	}
	k.status["conditions"] = conds
	k.addHistory(rev, "ReconciliationSucceeded", k.appliedAt)
	if g.chance(0.5) {
		k.addHistory(g.olderRevision(rev), "ReconciliationSucceeded", k.appliedAt.Add(-time.Duration(1+g.intn(72))*hour))
	}
}

func (k *ksStatus) progressing() {
	p := k.p
	k.setApplied(k.rev, k.rev)
	msg := "Reconciliation in progress"
	started := k.g.ago(0, 2*minute)
	k.status["conditions"] = []any{
		cond("Reconciling", "True", "Progressing", msg, p.cond, started),
		cond("Ready", "Unknown", "Progressing", msg, p.cond, started),
	}
	k.addHistory(k.rev, "ReconciliationSucceeded", k.appliedAt)
}

func (k *ksStatus) failing(variant string, after *dep) {
	g, p, rev := k.g, k.p, k.rev
	failedAt := g.ago(minute, 3*hour)
	msg := k.failureMessage(variant, after)
	conds := []any{cond("Ready", "False", variant, msg, p.cond, failedAt)}
	if variant != "ArtifactFailed" && variant != "DependencyNotReady" {
		// reconcile marked Reconciling when it began; finalizeStatus turns
		// it into ProgressingWithRetry beside the failed Ready (KC
		// kustomization_controller.go). The checks before reconcile
		// (source, dependencies) return without it.
		conds = append([]any{cond("Reconciling", "True", "ProgressingWithRetry", fmt.Sprintf("Building manifests for revision %s with a timeout of 5m0s", rev), p.cond, failedAt)}, conds...)
	}
	switch variant {
	case "BuildFailed", "ReconciliationFailed":
		// The new revision failed; the previous one stays applied.
		old := g.olderRevision(rev)
		k.setApplied(old, rev)
		k.addHistory(rev, variant, failedAt)
		if variant == "BuildFailed" {
			// kustomize-controller records a history entry only after a
			// successful build (KC KustomizationReconciler.reconcile,
			// docs/flux-semantics.md rule 8). The entry is still drawn,
			// so that each seed keeps giving the same fleet.
			k.history = k.history[:len(k.history)-1]
		}
		k.addHistory(old, "ReconciliationSucceeded", failedAt.Add(-time.Duration(1+g.intn(48))*hour))
	case "HealthCheckFailed":
		k.setApplied(rev, rev)
		conds = append(conds, cond("Healthy", "False", "HealthCheckFailed", msg, p.cond, failedAt))
		k.addHistory(rev, "HealthCheckFailed", failedAt)
	}
	k.status["conditions"] = conds
	if _, applied := k.status["lastAppliedRevision"]; !applied {
		// Only a Ready=True attempt moves observedGeneration
		// (finalizeStatus), and the API's default is -1.
		k.status["observedGeneration"] = int64(-1)
	}
}

// failureMessage is Ready's message for the variant, as
// kustomize-controller words it.
func (k *ksStatus) failureMessage(variant string, after *dep) string {
	g, p, app := k.g, k.p, k.app
	switch variant {
	case "ArtifactFailed":
		return "Source artifact not found, retrying in 30s"
	case "DependencyNotReady":
		if g.chance(0.6) { // it had been applied before the dependency broke
			old := g.olderRevision(k.rev)
			k.setApplied(old, old)
			k.addHistory(old, "ReconciliationSucceeded", k.appliedAt.Add(-6*hour))
		}
		return fmt.Sprintf("dependency '%s/%s' is not ready", after.ns, after.name)
	case "BuildFailed":
		return fmt.Sprintf("kustomize build failed: accumulating resources: accumulation err='accumulating resources from '%s.yaml': open /tmp/kustomization-%s/%s/%s.yaml: no such file or directory': must build at directory: not a valid directory", app, g.hex(9), strings.TrimPrefix(k.path, "./"), app)
	case "HealthCheckFailed":
		return fmt.Sprintf("health check failed after 5m0s: timeout waiting for: [Deployment/%s/%s status: 'InProgress']", p.ns, app)
	case "ReconciliationFailed":
		// The apply error's message ends in a newline (recorded from
		// kustomize-controller v1.9.4).
		return fmt.Sprintf("Deployment/%s/%s dry-run failed (Invalid): Deployment.apps \"%s\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"%s\"}}: field is immutable\n", p.ns, app, app, app)
	}
	return ""
}
