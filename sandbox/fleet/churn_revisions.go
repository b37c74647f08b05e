package fleet

// Churn of revisions: sources get new artifacts and their consumers apply
// them, as the controllers record it in status and history.

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var bumpable = map[string]bool{
	KindGitRepository: true, KindOCIRepository: true, KindHelmRepository: true,
	KindBucket: true, KindHelmChart: true, KindExternalArtifact: true,
}

// bump stores a new artifact revision on a ready source, then lets its
// consumers apply it.
func (ch *churner) bump(ctx context.Context, n *node, now time.Time) error {
	u, ri, err := ch.get(ctx, n.group, n.ref)
	if err != nil {
		return err
	}
	art, ok, _ := unstructured.NestedMap(u.Object, "status", "artifact")
	if !ok || !settled(u) || conditionStatus(u.Object, "Ready") != "True" {
		return errNotEligible
	}
	if branch, _, _ := unstructured.NestedString(u.Object, "spec", "ref", "branch"); n.ref.kind == KindGitRepository && branch == "" {
		return errNotEligible // tags and semver ranges do not move on their own
	}
	oldRev, _ := art["revision"].(string)
	hex := ch.g.hex(64)
	rev, file := nextRevision(n.ref.kind, oldRev, hex, ch.g)
	chartName, _, _ := unstructured.NestedString(u.Object, "spec", "chart")
	if n.ref.kind == KindHelmChart {
		file = chartName + "-" + rev + ".tgz"
	}
	oldPath, _ := art["path"].(string)
	oldURL, _ := art["url"].(string)
	path := oldPath[:strings.LastIndex(oldPath, "/")+1] + file
	art["revision"] = rev
	art["digest"] = "sha256:" + hex
	art["path"] = path
	art["url"] = strings.TrimSuffix(oldURL, oldPath) + path
	art["size"] = int64(2_000 + ch.g.intn(4_000_000))
	art["lastUpdateTime"] = ts(now)
	if md, ok := art["metadata"].(map[string]any); ok {
		md["org.opencontainers.image.revision"] = "main@sha1:" + ch.g.hex(40)
		md["org.opencontainers.image.created"] = ts(now)
	}
	if err := unstructured.SetNestedMap(u.Object, art, "status", "artifact"); err != nil {
		return err
	}
	msg := storedMessage(n.ref.kind, rev, chartName)
	reason, _ := findCond(u, "Ready")["reason"].(string)
	setCond(u, "Ready", "True", reason, msg, now)
	setCond(u, "ArtifactInStorage", "True", reason, msg, now)
	if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s: %w", n.ref, err)
	}
	ch.stats.RevisionBumps++
	ch.log.Info("churn", "action", actBump.String(), "kind", n.ref.kind, "namespace", n.ref.ns, "name", n.ref.name, "revision", rev)

	for _, d := range ch.nodes {
		if d.consumes != n.ref {
			continue
		}
		// Controllers pick a new artifact up within their interval: a
		// spread of ticks, so lead times differ.
		ch.followUps = append(ch.followUps, followUp{node: d, due: ch.tick + 1 + ch.r.IntN(10), kind: applyRevision, rev: rev, art: art})
	}
	return nil
}

// followUp runs a controller step that was due.
func (ch *churner) followUp(ctx context.Context, f followUp, now time.Time) error {
	switch f.kind {
	case applyRevision:
		return ch.consume(ctx, f.node, f.rev, f.art, now)
	case rollBack:
		return ch.rollBack(ctx, f.node, now)
	default:
		return ch.recoverChange(ctx, f.node, now)
	}
}

// nextRevision returns a source's next revision and its artifact file name.
func nextRevision(kind, old, hex string, g *gen) (rev, file string) {
	file = hex + ".tar.gz"
	switch kind {
	case KindGitRepository:
		commit := g.hex(40)
		return old[:strings.Index(old, "@")] + "@sha1:" + commit, commit + ".tar.gz"
	case KindOCIRepository:
		tag := old[:strings.Index(old, "@")]
		if _, _, ok := splitVersion(tag); ok {
			tag = shiftVersion(tag, 1)
		}
		return tag + "@sha256:" + g.hex(64), file
	case KindHelmRepository:
		return "sha256:" + hex, "index-" + hex + ".yaml"
	case KindHelmChart:
		return shiftVersion(old, 1), file
	case KindExternalArtifact:
		return "latest@sha256:" + g.hex(64), file
	default:
		return "sha256:" + hex, file
	}
}

// consume is a consumer's controller reacting to a new source revision.
func (ch *churner) consume(ctx context.Context, d *node, rev string, art map[string]any, now time.Time) error {
	u, ri, err := ch.get(ctx, d.group, d.ref)
	if err != nil {
		return err
	}
	if !hasStatusMap(u) || !settled(u) || conditionStatus(u.Object, "Ready") != "True" {
		return errNotEligible
	}
	st := statusOf(u)
	if (d.ref.kind == KindKustomization || d.ref.kind == KindHelmRelease) && ch.r.IntN(failEvery) == 0 {
		return ch.failChange(ctx, d, u, ri, rev, art, now)
	}
	switch d.ref.kind {
	case KindKustomization:
		st["lastAppliedRevision"], st["lastAttemptedRevision"] = rev, rev
		md, _ := art["metadata"].(map[string]any)
		if origin, ok := md["org.opencontainers.image.revision"]; ok {
			st["lastAppliedOriginRevision"] = origin
		}
		setCond(u, "Ready", "True", "ReconciliationSucceeded", "Applied revision: "+rev, now)
		ch.upsertHistory(st, "sha256:"+ch.g.hex(64), "ReconciliationSucceeded", rev, now)
	case KindHelmRelease:
		ch.upgrade(u, st, rev, art, now)
	case KindHelmChart:
		st["observedSourceArtifactRevision"] = rev
	default:
		return errNotEligible
	}
	if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s: %w", d.ref, err)
	}
	ch.stats.DependentUpdates++
	ch.log.Info("churn", "action", "apply-revision", "kind", d.ref.kind, "namespace", d.ref.ns, "name", d.ref.name, "revision", rev)
	return nil
}

// upgrade records a Helm upgrade to the chart version in rev that
// succeeded, as helm-controller does: a new release, deployed, and the
// history truncated after the previous deployed release, now superseded
// (HC internal/reconcile/release.go recordOnObject, api/v2 Snapshots.Truncate).
// A new chart version resets the failure counters (HC action.MustResetFailures).
func (ch *churner) upgrade(u *unstructured.Unstructured, st map[string]any, rev string, art map[string]any, now time.Time) {
	history, _ := st["history"].([]any)
	if len(history) == 0 {
		return
	}
	cur, ok := history[0].(map[string]any)
	if !ok {
		return
	}
	next := make(map[string]any, len(cur))
	for k, v := range cur {
		next[k] = v
	}
	version, _ := cur["version"].(int64)
	version++
	chartVersion, attempted := rev, rev
	if i := strings.Index(rev, "@sha256:"); i >= 0 { // an OCIRepository: tag@digest
		digest := rev[i+len("@sha256:"):]
		chartVersion = rev[:i]
		attempted = chartVersion + "+" + digest[:12]
		st["lastAttemptedRevisionDigest"] = "sha256:" + digest
		next["ociDigest"] = art["digest"]
	}
	next["version"] = version
	next["chartVersion"] = chartVersion
	next["status"] = "deployed"
	next["action"] = "upgrade"
	next["digest"] = "sha256:" + ch.g.hex(64)
	// Helm keeps the release's first install time in firstDeployed.
	next["lastDeployed"] = ts(now)
	delete(next, "testHooks")
	st["history"] = supersede(next, history)
	delete(st, "failures")
	delete(st, "upgradeFailures")
	removeCond(u, "Remediated")
	st["lastAttemptedRevision"] = attempted
	st["lastAttemptedReleaseAction"] = "upgrade"
	msg := fmt.Sprintf("Helm upgrade succeeded for release %s/%s.v%d with chart %s@%s", next["namespace"], next["name"], version, next["chartName"], chartVersion)
	setCond(u, "Ready", "True", "UpgradeSucceeded", msg, now)
	setCond(u, "Released", "True", "UpgradeSucceeded", msg, now)
}

// supersede puts a new deployed release in front of the history: the
// deployed release before it becomes superseded, failed ones in between
// stay, and what is older than the previous deployed or superseded release
// goes (HC api/v2 Snapshots.Truncate).
func supersede(next map[string]any, history []any) []any {
	out := []any{next}
	for _, h := range history {
		m, ok := h.(map[string]any)
		if !ok {
			continue
		}
		out = append(out, m)
		if m["status"] == "deployed" || m["status"] == "superseded" {
			m["status"] = "superseded"
			break
		}
	}
	return out
}

// upsertHistory records a Kustomization reconcile as fluxcd/pkg apis/meta
// History.Upsert does: the entry of the same digest and status is updated
// and moved to the front, or a new one is put there; at most 5 are kept.
func (ch *churner) upsertHistory(st map[string]any, digest, status, rev string, now time.Time) {
	history, _ := st["history"].([]any)
	for i, h := range history {
		m, ok := h.(map[string]any)
		if !ok || m["digest"] != digest || m["lastReconciledStatus"] != status {
			continue
		}
		n, _ := m["totalReconciliations"].(int64)
		m["totalReconciliations"], m["lastReconciled"] = n+1, ts(now)
		m["metadata"] = map[string]any{"revision": rev}
		st["history"] = append(append([]any{m}, history[:i]...), history[i+1:]...)
		return
	}
	entry := map[string]any{
		"digest":                 digest,
		"firstReconciled":        ts(now),
		"lastReconciled":         ts(now),
		"lastReconciledDuration": ch.g.duration(300*time.Millisecond, 30*time.Second),
		"lastReconciledStatus":   status,
		"totalReconciliations":   int64(1),
		"metadata":               map[string]any{"revision": rev},
	}
	st["history"] = append([]any{entry}, history[:min(len(history), 4)]...)
}
