package fleet

import (
	"fmt"
	"strings"
	"time"
)

// helmStatus builds a HelmRelease's status as helm-controller writes it,
// one shape per planned state and variant; its fields are what the shapes
// share.
type helmStatus struct {
	g              *gen
	p              *planned
	c              chart
	relNs, relName string
	testEnabled    bool
	ociChart       bool
	ociArtifact    bool
	status         map[string]any
	configDigest   string
	digest         string // of the OCI chart artifact, when there is one
	version, older string
	deployedAt     time.Time
	failedAt       time.Time
	failErr        string
	v              int64 // the release's version
	history        []any
	helmChart      string
	chartRefName   any
}

func (g *gen) helmReleaseStatus(p *planned, c chart, chartSpec map[string]any, chartArt *artifact, helmChart, relNs, relName, variant string, testEnabled bool) map[string]any {
	h := &helmStatus{g: g, p: p, c: c, relNs: relNs, relName: relName, testEnabled: testEnabled, helmChart: helmChart,
		version: c.version, older: shiftVersion(c.version, -1), history: []any{}}
	h.status = map[string]any{
		"observedGeneration":      p.obs,
		"lastAttemptedGeneration": p.cond,
		"storageNamespace":        p.ns, // Helm's storage stays with the HelmRelease by default
	}
	if helmChart != "" {
		h.status["helmChart"] = helmChart
	}
	var chartRef any
	chartRef, h.ociChart = chartSpec["chartRef"]
	if ref, ok := chartRef.(map[string]any); ok {
		h.chartRefName = ref["name"]
	}
	h.configDigest = "sha256:" + g.hex(64)
	h.status["lastAttemptedConfigDigest"] = h.configDigest
	if h.ociChart && chartArt != nil {
		h.ociArtifact = true
		// helm-controller appends the first 12 characters of the OCI digest.
		h.digest = chartArt.revision[strings.Index(chartArt.revision, "@sha256:")+len("@sha256:"):]
		h.status["lastAttemptedRevisionDigest"] = "sha256:" + h.digest
	}
	h.deployedAt = g.ago(10*minute, 20*day)
	h.v = 1
	if g.chance(0.6) {
		h.v = int64(2 + g.intn(14))
	}
	h.failedAt = g.ago(minute, 6*hour)
	h.failErr = g.pick([]string{
		"context deadline exceeded",
		fmt.Sprintf("resource Deployment/%s/%s not ready. status: InProgress, message: Available: 0/2", relNs, relName),
		fmt.Sprintf("cannot patch \"%s\" with kind Deployment: Deployment.apps \"%s\" is invalid: spec.template.spec.containers[0].image: Required value", relName, relName),
	})
	switch {
	case p.st == StateReady || p.st == StateProgressing:
		h.released(variant)
	case variant == "ArtifactFailed":
		h.sourceNotReady()
	case variant == "InstallFailed" || (p.st == StateStalled && h.v == 1):
		h.installFailed()
	case variant == "UpgradeFailed":
		h.upgradeFailed()
	case variant == "RollbackSucceeded" || p.st == StateStalled:
		h.rolledBack()
	}
	if len(h.history) > 0 {
		h.status["history"] = h.history
	}
	return h.status
}

// revision is the chart version as helm-controller records it.
func (h *helmStatus) revision(v string) string {
	if h.ociArtifact {
		return v + "+" + h.digest[:12]
	}
	return v
}

// full is the release's name at Helm version v.
func (h *helmStatus) full(v int64) string { return fmt.Sprintf("%s/%s.v%d", h.relNs, h.relName, v) }

// snap is a status.history entry.
func (h *helmStatus) snap(v int64, st, action, chartVersion string, at time.Time) map[string]any {
	s := map[string]any{
		"name":         h.relName,
		"namespace":    h.relNs,
		"version":      v,
		"status":       st,
		"action":       action,
		"chartName":    h.c.name,
		"chartVersion": chartVersion,
		"appVersion":   h.c.appVersion,
		"configDigest": h.configDigest,
		"digest":       "sha256:" + h.g.hex(64),
		// Helm copies the first install's time into every version
		// (helm.sh/helm/v4 pkg/action upgrade.go, rollback.go).
		"firstDeployed": ts(h.deployedAt.Add(-90 * 24 * hour)),
		"lastDeployed":  ts(at),
	}
	if h.ociArtifact {
		s["ociDigest"] = "sha256:" + h.g.hex(64)
	}
	if h.testEnabled && st == "deployed" {
		s["testHooks"] = map[string]any{h.relName + "-test-connection": map[string]any{
			"lastStarted": ts(at.Add(10 * time.Second)), "lastCompleted": ts(at.Add(25 * time.Second)), "phase": "Succeeded",
		}}
	}
	return s
}

func action(v int64) string {
	if v == 1 {
		return "install"
	}
	return "upgrade"
}

func (h *helmStatus) setAttempt(chartVersion, act string) {
	h.status["lastAttemptedRevision"] = h.revision(chartVersion)
	h.status["lastAttemptedReleaseAction"] = act
	h.status["lastAttemptedReleaseActionDuration"] = h.g.duration(2*time.Second, 4*minute)
}

func (h *helmStatus) inventory() {
	h.status["inventory"] = map[string]any{"entries": h.g.inventory(h.relNs, h.relName)}
}

// released is a deployed release, or one whose upgrade or drift
// correction is running.
func (h *helmStatus) released(variant string) {
	p, v := h.p, h.v
	h.setAttempt(h.version, action(v))
	h.history = append(h.history, h.snap(v, "deployed", action(v), h.version, h.deployedAt))
	if v > 1 {
		h.history = append(h.history, h.snap(v-1, "superseded", action(v-1), h.older, h.deployedAt.Add(-72*hour)))
	}
	h.status["conditions"] = h.readyConds()
	if p.st == StateProgressing {
		// helm-controller's words: "Running '<action>' <type> action with timeout of <t>".
		running := "Running 'upgrade' release action with timeout of 5m0s"
		readyMsg := running
		if variant == "CorrectingDrift" {
			running = "Running 'correct cluster drift' drift correction action with timeout of 5m0s"
			readyMsg = "correcting cluster drift"
		}
		started := h.g.ago(0, 2*minute)
		h.status["conditions"] = []any{
			cond("Reconciling", "True", "Progressing", running, p.cond, started),
			cond("Ready", "Unknown", "Progressing", readyMsg, p.cond, started),
			h.status["conditions"].([]any)[1],
		}
	}
	h.inventory()
}

func (h *helmStatus) readyConds() []any {
	p, v := h.p, h.v
	reason, msg := "UpgradeSucceeded", fmt.Sprintf("Helm upgrade succeeded for release %s with chart %s@%s", h.full(v), h.c.name, h.version)
	if v == 1 {
		reason, msg = "InstallSucceeded", fmt.Sprintf("Helm install succeeded for release %s with chart %s@%s", h.full(v), h.c.name, h.version)
	}
	conds := []any{
		cond("Ready", "True", reason, msg, p.cond, h.deployedAt),
		cond("Released", "True", reason, msg, p.cond, h.deployedAt),
	}
	if h.testEnabled {
		tmsg := fmt.Sprintf("Helm test succeeded for release %s with chart %s@%s: 1 test hook completed successfully", h.full(v), h.c.name, h.version)
		conds = append(conds, cond("TestSuccess", "True", "TestSucceeded", tmsg, p.cond, h.deployedAt))
	}
	return conds
}

// sourceNotReady is helm-controller's reason for a source that exists but
// is not ready (HC helmrelease_controller.go reconcileRelease,
// isSourceReady); ArtifactFailed is for one it cannot get.
func (h *helmStatus) sourceNotReady() {
	src := "HelmChart '" + h.helmChart + "'"
	if h.ociChart {
		src = fmt.Sprintf("OCIRepository '%s/%s'", h.p.ns, h.chartRefName)
	}
	h.status["conditions"] = []any{cond("Ready", "False", "SourceNotReady", src+" is not ready: latest generation of object has not been reconciled", h.p.cond, h.failedAt)}
}

// installFailed is a failed install, retried; or, out of install retries
// (3), the last failure remediated by uninstalling (remediateLastFailure
// defaults to true when retries > 0): HC uninstall_remediation.go,
// atomic_release.go MarkStalled RetriesExceeded.
func (h *helmStatus) installFailed() {
	p := h.p
	h.setAttempt(h.version, "install")
	msg := fmt.Sprintf("Helm install failed for release %s/%s with chart %s@%s: %s", h.relNs, h.relName, h.c.name, h.version, h.failErr)
	n := int64(1 + h.g.intn(2))
	if p.st == StateStalled {
		n = 4
		uninstalled := fmt.Sprintf("Helm uninstall remediation for release %s with chart %s@%s succeeded", h.full(1), h.c.name, h.version)
		h.history = append(h.history, h.snap(1, "uninstalled", "uninstall-remediation", h.version, h.failedAt))
		h.status["conditions"] = []any{
			cond("Stalled", "True", "RetriesExceeded", fmt.Sprintf("Failed to install after %d attempt(s)", n), p.cond, h.failedAt),
			cond("Ready", "False", "UninstallSucceeded", uninstalled, p.cond, h.failedAt),
			cond("Released", "False", "InstallFailed", msg, p.cond, h.failedAt),
			cond("Remediated", "True", "UninstallSucceeded", uninstalled, p.cond, h.failedAt),
		}
	} else {
		h.history = append(h.history, h.snap(1, "failed", "install", h.version, h.failedAt))
		h.status["conditions"] = []any{cond("Ready", "False", "InstallFailed", msg, p.cond, h.failedAt), cond("Released", "False", "InstallFailed", msg, p.obs, h.failedAt)}
	}
	h.status["installFailures"], h.status["failures"] = n, n
}

// upgradeFailed: the source moved to version; the upgrade to it failed and
// will be retried (Reconciling ProgressingWithRetry, HC atomic_release.go).
func (h *helmStatus) upgradeFailed() {
	p, v := h.p, max(h.v, 2)
	h.setAttempt(h.version, "upgrade")
	h.history = append(h.history,
		h.snap(v, "failed", "upgrade", h.version, h.failedAt),
		h.snap(v-1, "deployed", action(v-1), h.older, h.deployedAt.Add(-48*hour)))
	msg := fmt.Sprintf("Helm upgrade failed for release %s/%s with chart %s@%s: %s", h.relNs, h.relName, h.c.name, h.version, h.failErr)
	n := int64(1 + h.g.intn(2))
	h.status["conditions"] = []any{
		cond("Reconciling", "True", "ProgressingWithRetry", msg, p.cond, h.failedAt),
		cond("Ready", "False", "UpgradeFailed", msg, p.cond, h.failedAt),
		cond("Released", "False", "UpgradeFailed", msg, p.obs, h.failedAt),
	}
	h.status["upgradeFailures"], h.status["failures"] = n, n
	h.inventory()
}

// rolledBack: an upgrade failed and was rolled back (upgrade.remediation:
// retries 3, strategy rollback). Between attempts helm-controller retries
// at the next interval (Reconciling ProgressingWithRetry); once the retries
// are spent it stalls, the last failure rolled back too
// (remediateLastFailure). Shapes recorded from helm-controller v1.6.2
// (sandbox/e2e/testdata/recorded/recorded-helm-upgrade-rollback-stalled.yaml).
func (h *helmStatus) rolledBack() {
	p, v := h.p, max(h.v, 3)
	h.setAttempt(h.version, "upgrade")
	h.history = append(h.history,
		h.snap(v, "deployed", "rollback", h.older, h.failedAt),
		h.snap(v-1, "failed", "upgrade", h.version, h.failedAt.Add(-5*minute)),
		// helm-controller marks every release the rollback touches with
		// action rollback, the restored one included (HC
		// rollback_remediation.go observeRollback).
		h.snap(v-2, "superseded", "rollback", h.older, h.deployedAt.Add(-48*hour)))
	upgradeMsg := fmt.Sprintf("Helm upgrade failed for release %s/%s with chart %s@%s: %s", h.relNs, h.relName, h.c.name, h.version, h.failErr)
	rollbackMsg := fmt.Sprintf("Helm rollback to previous release %s with chart %s@%s succeeded", h.full(v-2), h.c.name, h.older)
	n, first := int64(1), cond("Reconciling", "True", "ProgressingWithRetry", rollbackMsg, p.cond, h.failedAt)
	if p.st == StateStalled {
		n = 4
		first = cond("Stalled", "True", "RetriesExceeded", fmt.Sprintf("Failed to upgrade after %d attempt(s)", n), p.cond, h.failedAt)
	}
	h.status["conditions"] = []any{
		first,
		cond("Ready", "False", "RollbackSucceeded", rollbackMsg, p.cond, h.failedAt),
		cond("Released", "False", "UpgradeFailed", upgradeMsg, p.cond, h.failedAt),
		cond("Remediated", "True", "RollbackSucceeded", rollbackMsg, p.cond, h.failedAt),
	}
	h.status["upgradeFailures"], h.status["failures"] = n, n
	h.inventory()
}
