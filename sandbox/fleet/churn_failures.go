package fleet

// Churn of failures: a change that fails, a Helm rollback, and the
// recovery of the next attempt.

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
)

// failChange is a consumer's controller failing the new revision as it
// records that: kustomize-controller applies the manifests but their
// health check fails (a HealthCheckFailed history entry; the applied
// revision stays the previous one), helm-controller's upgrade fails (a
// failed release). A later tick rolls the release back, when the
// HelmRelease remediates by rollback, or retries the change successfully.
func (ch *churner) failChange(ctx context.Context, d *node, u *unstructured.Unstructured, ri dynamic.ResourceInterface, rev string, art map[string]any, now time.Time) error {
	st := statusOf(u)
	// Someone fixes it, some ticks later: restore times differ too.
	next := followUp{node: d, due: ch.tick + 2 + ch.r.IntN(20), kind: recover, rev: rev, art: art}
	switch d.ref.kind {
	case KindKustomization:
		st["lastAttemptedRevision"] = rev
		msg := fmt.Sprintf("health check failed after 5m0s: timeout waiting for: [Deployment/%s/%s status: 'InProgress']", u.GetNamespace(), u.GetName())
		setCond(u, "Ready", "False", "HealthCheckFailed", msg, now)
		if findCond(u, "Healthy") != nil {
			setCond(u, "Healthy", "False", "HealthCheckFailed", msg, now)
		}
		ch.upsertHistory(st, "sha256:"+ch.g.hex(64), "HealthCheckFailed", rev, now)
		// reconcile marked Reconciling; finalizeStatus keeps it beside
		// the failed Ready as ProgressingWithRetry (KC).
		setCond(u, "Reconciling", "True", "ProgressingWithRetry", "Detecting drift for revision "+rev+" with a timeout of 5m0s", now)
	case KindHelmRelease:
		history, _ := st["history"].([]any)
		if len(history) == 0 {
			return errNotEligible
		}
		cur, ok := history[0].(map[string]any)
		if !ok {
			return errNotEligible
		}
		failed := make(map[string]any, len(cur))
		for k, v := range cur {
			failed[k] = v
		}
		version, _ := cur["version"].(int64)
		chartVersion, _, _ := strings.Cut(rev, "@sha256:")
		failed["version"], failed["status"], failed["action"], failed["chartVersion"] = version+1, "failed", "upgrade", chartVersion
		failed["digest"], failed["lastDeployed"] = "sha256:"+ch.g.hex(64), ts(now)
		delete(failed, "testHooks")
		st["history"] = append([]any{failed}, history...)
		st["lastAttemptedRevision"], st["lastAttemptedReleaseAction"] = chartVersion, "upgrade"
		for _, k := range []string{"failures", "upgradeFailures"} {
			n, _ := st[k].(int64)
			st[k] = n + 1
		}
		msg := fmt.Sprintf("Helm upgrade failed for release %s/%s with chart %s@%s: context deadline exceeded", cur["namespace"], cur["name"], cur["chartName"], chartVersion)
		setCond(u, "Ready", "False", "UpgradeFailed", msg, now)
		setCond(u, "Released", "False", "UpgradeFailed", msg, now)
		// The failed attempt will be retried (HC atomic_release.go).
		setCond(u, "Reconciling", "True", "ProgressingWithRetry", msg, now)
		if strategy, _, _ := unstructured.NestedString(u.Object, "spec", "upgrade", "remediation", "strategy"); strategy == "rollback" {
			next = followUp{node: d, due: ch.tick + 1, kind: rollBack}
		}
	}
	if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s: %w", d.ref, err)
	}
	ch.followUps = append(ch.followUps, next)
	ch.stats.FailedChanges++
	ch.log.Info("churn", "action", "fail-change", "kind", d.ref.kind, "namespace", d.ref.ns, "name", d.ref.name, "revision", rev)
	return nil
}

// rollBack is helm-controller's rollback remediation of the failed upgrade
// at the front of the history, as it records it with Helm 4: a new release
// of the previous deployed one's chart, deployed with action rollback; the
// failed release stays failed; the restored release is superseded and
// marked rollback too (HC internal/reconcile/rollback_remediation.go
// observeRollback; helm.sh/helm/v4 pkg/action/rollback.go). Ready stays
// False, with Remediated's reason.
func (ch *churner) rollBack(ctx context.Context, d *node, now time.Time) error {
	u, ri, err := ch.get(ctx, d.group, d.ref)
	if err != nil {
		return err
	}
	st := statusOf(u)
	history, _ := st["history"].([]any)
	if len(history) < 2 {
		return errNotEligible
	}
	failed, _ := history[0].(map[string]any)
	if failed == nil || failed["status"] != "failed" {
		return errNotEligible // retried or changed meanwhile
	}
	var prev map[string]any
	for _, h := range history[1:] {
		if m, ok := h.(map[string]any); ok && (m["status"] == "deployed" || m["status"] == "superseded") {
			prev = m
			break
		}
	}
	if prev == nil {
		return errNotEligible
	}
	version, _ := failed["version"].(int64)
	rb := make(map[string]any, len(prev))
	for k, v := range prev {
		rb[k] = v
	}
	rb["version"], rb["status"], rb["action"] = version+1, "deployed", "rollback"
	rb["digest"], rb["lastDeployed"] = "sha256:"+ch.g.hex(64), ts(now)
	prev["status"], prev["action"] = "superseded", "rollback"
	var kept []any
	for _, h := range history {
		kept = append(kept, h)
		if m, _ := h.(map[string]any); m != nil && m["version"] == prev["version"] {
			break
		}
	}
	st["history"] = append([]any{rb}, kept...)
	msg := fmt.Sprintf("Helm rollback to previous release %s/%s.v%d with chart %s@%s succeeded", prev["namespace"], prev["name"], prev["version"], prev["chartName"], prev["chartVersion"])
	setCond(u, "Remediated", "True", "RollbackSucceeded", msg, now)
	setCond(u, "Ready", "False", "RollbackSucceeded", msg, now)
	setCond(u, "Reconciling", "True", "ProgressingWithRetry", msg, now)
	if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s: %w", d.ref, err)
	}
	ch.followUps = append(ch.followUps, followUp{node: d, due: ch.tick + 2 + ch.r.IntN(20), kind: recover})
	ch.stats.Rollbacks++
	ch.log.Info("churn", "action", "rollback", "kind", d.ref.kind, "namespace", d.ref.ns, "name", d.ref.name, "version", rb["version"])
	return nil
}

// recoverChange is the next attempt at a failed change succeeding: the
// manifests pass their health check (a ReconciliationSucceeded entry of
// the same digest), or the upgrade is retried into a new deployed release.
func (ch *churner) recoverChange(ctx context.Context, d *node, now time.Time) error {
	u, ri, err := ch.get(ctx, d.group, d.ref)
	if err != nil {
		return err
	}
	if !hasStatusMap(u) || conditionStatus(u.Object, "Ready") != "False" {
		return errNotEligible // flipped back meanwhile
	}
	reason, msg, ok := ch.recovered(u, now)
	if !ok {
		return errNotEligible
	}
	setCond(u, "Ready", "True", reason, msg, now)
	if findCond(u, "Healthy") != nil {
		setCond(u, "Healthy", "True", "Succeeded", "Health check passed in 3.2s", now)
	}
	// A successful attempt ends the retries (KC finalizeStatus, HC
	// atomic_release.go delete Reconciling).
	removeCond(u, "Reconciling")
	if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s: %w", d.ref, err)
	}
	ch.stats.Recoveries++
	ch.log.Info("churn", "action", "recover", "kind", d.ref.kind, "namespace", d.ref.ns, "name", d.ref.name)
	return nil
}

// failure is how a kind's controller reports a transient failure.
type failure struct {
	reason  string
	cond    string // negative-polarity condition also set, if any
	message func(u *unstructured.Unstructured) string
}

func nested(u *unstructured.Unstructured, path ...string) string {
	s, _, _ := unstructured.NestedString(u.Object, path...)
	return s
}

var failures = map[string]failure{
	KindGitRepository: {"GitOperationFailed", "FetchFailed", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("failed to checkout and determine revision: unable to clone '%s': context deadline exceeded", nested(u, "spec", "url"))
	}},
	KindOCIRepository: {"OCIArtifactPullFailed", "FetchFailed", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("failed to pull artifact from '%s': GET https://%s: 503 Service Unavailable", nested(u, "spec", "url"), strings.TrimPrefix(nested(u, "spec", "url"), "oci://"))
	}},
	KindHelmRepository: {"IndexationFailed", "FetchFailed", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("failed to fetch Helm repository index: failed to cache index to temporary file: failed to fetch %s/index.yaml : 503 Service Unavailable", nested(u, "spec", "url"))
	}},
	KindHelmChart: {"ChartPullError", "FetchFailed", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("chart pull error: failed to download chart for remote reference: %s: 502 Bad Gateway", nested(u, "spec", "chart"))
	}},
	KindBucket: {"BucketOperationFailed", "FetchFailed", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("failed to list objects from bucket '%s': connection refused", nested(u, "spec", "bucketName"))
	}},
	KindExternalArtifact: {"BuildFailed", "BuildFailed", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("failed to build artifact: source %s/%s is not ready", nested(u, "spec", "sourceRef", "kind"), nested(u, "spec", "sourceRef", "name"))
	}},
	KindKustomization: {"HealthCheckFailed", "", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("health check failed after 5m0s: timeout waiting for: [Deployment/%s/%s status: 'InProgress']", u.GetNamespace(), u.GetName())
	}},
	KindHelmRelease: {"UpgradeFailed", "", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("Helm upgrade failed for release %s/%s: context deadline exceeded", u.GetNamespace(), u.GetName())
	}},
	KindImageRepository: {"ReadOperationFailed", "", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("failed to scan image '%s': 503 Service Unavailable", nested(u, "spec", "image"))
	}},
	KindImagePolicy: {"ReconciliationFailed", "", func(*unstructured.Unstructured) string {
		return "cannot determine latest tag for policy: version list argument cannot be empty"
	}},
	KindImageUpdateAutomation: {"GitOperationFailed", "", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("failed to push to remote: remote: Permission to acme/%s.git denied to fluxcdbot.", nested(u, "spec", "sourceRef", "name"))
	}},
	KindReceiver: {"TokenNotFound", "", func(u *unstructured.Unstructured) string {
		return fmt.Sprintf("unable to read token from secret '%s/webhook-token' error: Secret \"webhook-token\" not found", u.GetNamespace())
	}},
}

// recovered returns a kind's Ready reason and message from what the status
// says it last achieved, or false when there is nothing to be ready with.
// A Kustomization or HelmRelease whose last change failed records the
// successful retry as its controller does: kustomize-controller a
// ReconciliationSucceeded entry of the same digest, helm-controller a new
// deployed release of the chart it attempted.
func (ch *churner) recovered(u *unstructured.Unstructured, now time.Time) (string, string, bool) {
	kind := u.GetKind()
	switch kind {
	case KindKustomization:
		st := statusOf(u)
		history, _ := st["history"].([]any)
		if len(history) > 0 {
			if h, ok := history[0].(map[string]any); ok && h["lastReconciledStatus"] != "ReconciliationSucceeded" {
				md, _ := h["metadata"].(map[string]any)
				rev, _ := md["revision"].(string)
				digest, _ := h["digest"].(string)
				ch.upsertHistory(st, digest, "ReconciliationSucceeded", rev, now)
				st["lastAppliedRevision"], st["lastAttemptedRevision"] = rev, rev
			}
		}
		rev := nested(u, "status", "lastAppliedRevision")
		return "ReconciliationSucceeded", "Applied revision: " + rev, rev != ""
	case KindHelmRelease:
		st := statusOf(u)
		history, _ := st["history"].([]any)
		if len(history) == 0 {
			return "", "", false
		}
		h, ok := history[0].(map[string]any)
		if !ok {
			return "", "", false
		}
		v, _ := h["version"].(int64)
		if h["status"] != "deployed" || h["action"] == "rollback" {
			// The retried upgrade: a new release of the attempted chart.
			chart, _, _ := strings.Cut(nested(u, "status", "lastAttemptedRevision"), "+")
			if chart == "" {
				chart, _ = h["chartVersion"].(string)
			}
			next := make(map[string]any, len(h))
			for k, val := range h {
				next[k] = val
			}
			v++
			next["version"], next["status"], next["action"], next["chartVersion"] = v, "deployed", "upgrade", chart
			next["digest"], next["lastDeployed"] = "sha256:"+ch.g.hex(64), ts(now)
			st["history"] = supersede(next, history)
			removeCond(u, "Remediated")
			h = next
		}
		reason, verb := "UpgradeSucceeded", "upgrade"
		if v == 1 {
			reason, verb = "InstallSucceeded", "install"
		}
		return reason, fmt.Sprintf("Helm %s succeeded for release %s/%s.v%d with chart %s@%s", verb, h["namespace"], h["name"], v, h["chartName"], h["chartVersion"]), true
	case KindImageRepository:
		n, ok, _ := unstructured.NestedInt64(u.Object, "status", "lastScanResult", "tagCount")
		return "Succeeded", fmt.Sprintf("successful scan: found %d tags with checksum %s", n, nested(u, "status", "lastScanResult", "revision")), ok
	case KindImagePolicy:
		tag := nested(u, "status", "latestRef", "tag")
		return "Succeeded", fmt.Sprintf("Latest image tag for %s resolved to %s", nested(u, "status", "latestRef", "name"), tag), tag != ""
	case KindImageUpdateAutomation:
		return "Succeeded", "repository up-to-date", true
	case KindReceiver:
		path := nested(u, "status", "webhookPath")
		return "Succeeded", "Receiver initialized for path: " + path, path != ""
	default: // sources
		rev := nested(u, "status", "artifact", "revision")
		reason := "Succeeded"
		if kind == KindHelmChart {
			reason = "ChartPullSucceeded"
		}
		return reason, storedMessage(kind, rev, nested(u, "spec", "chart")), rev != ""
	}
}
