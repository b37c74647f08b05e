package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// ChurnOptions set how Churn changes an applied fleet.
type ChurnOptions struct {
	// Interval between ticks; must be positive.
	Interval time.Duration
	// Seed picks the changes; the same seed on the same applied fleet makes
	// the same sequence of changes.
	Seed int64
	// ChangesPerTick defaults to one per 100 objects, at least 1.
	ChangesPerTick int
	// Ticks stops Churn after that many ticks; 0 runs until ctx is done.
	Ticks int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// ChurnStats count what Churn did.
type ChurnStats struct {
	Ticks            int
	RevisionBumps    int // a source stored a new artifact revision
	DependentUpdates int // a consumer applied or released the new revision
	ReadinessFlips   int
	GenerationBumps  int // a spec edit; the status catches up on a later tick
	CatchUps         int
	Suspends         int
	Resumes          int
	Deletes          int
	Creates          int
	FailedChanges    int // a consumer's new revision failed, as its controller records it
	Rollbacks        int // helm-controller rolled a failed upgrade back
	Recoveries       int // a failed change passed on a later attempt
	Errors           int
}

// errNotEligible marks a churn target that does not qualify for a change.
var errNotEligible = errors.New("not eligible")

// churn actions, each changing one object (and its dependents).
type churnAction int

const (
	actBump churnAction = iota
	actFlip
	actGeneration
	actSuspend
	actReplace
)

func (a churnAction) String() string {
	return [...]string{"bump-revision", "flip-readiness", "bump-generation", "suspend-resume", "delete-create"}[a]
}

// churnPattern is the cycle of actions, weighted toward what happens most
// in a live cluster: new revisions, then readiness changes.
var churnPattern = []churnAction{actBump, actFlip, actBump, actGeneration, actFlip, actSuspend, actBump, actReplace}

// node is what churn knows about a live object without asking the server.
type node struct {
	ref       objRef
	group     string
	hasStatus bool
	consumes  objRef
	dependsOn objRef
}

type churner struct {
	c          *client
	r          *rand.Rand
	g          *gen
	log        *slog.Logger
	namespaces []string
	nodes      []*node
	pending    []catchUp
	suspended  []objRef // suspended by churn, resumed first-in first-out
	// followUps are controllers acting on a change a few ticks after it:
	// a consumer applying a source's new revision, a rollback, a retry.
	followUps []followUp
	tick      int
	stats     ChurnStats
}

// followUp is one controller step due at a later tick.
type followUp struct {
	node *node
	due  int
	kind followUpKind
	rev  string
	art  map[string]any
}

type followUpKind int

const (
	// applyRevision: the consumer reconciles the source's new revision
	// within its interval, not in the same instant.
	applyRevision followUpKind = iota
	// rollBack: helm-controller remediates a failed upgrade by rollback.
	rollBack
	// recover: the next attempt at the failed change succeeds.
	recover
)

// failEvery is how often a consumer's new revision fails, one in that
// many: enough for the Delivery dashboard's change failure rate to move.
const failEvery = 5

// catchUp is a controller finishing a reconciliation a few ticks later.
type catchUp struct {
	ref   objRef
	group string
	due   int
	ready map[string]any // the Ready condition to restore; nil keeps conditions
}

// Churn changes the applied fleet every interval as a live cluster would:
// sources store new revisions that their consumers then apply, objects turn
// ready and failing, specs change and the status catches up a tick or two
// later, objects are suspended and resumed, and leaf objects are deleted
// while new ones are created. It returns when ctx is done (with a nil error)
// or after opts.Ticks ticks.
func Churn(ctx context.Context, cfg *rest.Config, f *Fleet, opts ChurnOptions) (ChurnStats, error) {
	if opts.Interval <= 0 {
		return ChurnStats{}, fmt.Errorf("churn interval must be positive, got %s", opts.Interval)
	}
	c, err := newClient(cfg)
	if err != nil {
		return ChurnStats{}, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ChangesPerTick <= 0 {
		opts.ChangesPerTick = max(1, len(f.Objects)/100)
	}
	g := newGen(opts.Seed^0x5eed, f.Options.Now, math.MaxInt)
	if f.reg != nil {
		g.reg = f.reg.clone()
	}
	ch := &churner{
		c:          c,
		r:          rand.New(rand.NewPCG(uint64(opts.Seed), 0xc0ffee)),
		g:          g,
		log:        opts.Logger,
		namespaces: f.Namespaces,
	}
	for _, o := range f.Objects {
		ch.track(o)
	}

	ticker := time.NewTicker(opts.Interval)
	defer ticker.Stop()
	for opts.Ticks == 0 || ch.stats.Ticks < opts.Ticks {
		select {
		case <-ctx.Done():
			return ch.stats, nil
		case <-ticker.C:
		}
		if err := ch.runTick(ctx, opts.ChangesPerTick); err != nil {
			if ctx.Err() != nil {
				return ch.stats, nil
			}
			return ch.stats, err
		}
	}
	return ch.stats, nil
}

func (ch *churner) track(o *Object) {
	ch.nodes = append(ch.nodes, &node{
		ref: refOf(o), group: o.Group, hasStatus: o.State != StateNoStatus,
		consumes: o.consumes, dependsOn: o.dependsOn,
	})
}

func (ch *churner) untrack(r objRef) {
	for i, n := range ch.nodes {
		if n.ref == r {
			ch.nodes = append(ch.nodes[:i], ch.nodes[i+1:]...)
			return
		}
	}
}

func (ch *churner) runTick(ctx context.Context, changes int) error {
	ch.stats.Ticks++
	ch.tick++
	now := time.Now().UTC().Truncate(time.Second)

	keep := ch.pending[:0]
	for _, cu := range ch.pending {
		if cu.due > ch.tick {
			keep = append(keep, cu)
			continue
		}
		if err := ch.catchUp(ctx, cu, now); err != nil {
			ch.fail(ctx, "catch-up", cu.ref, err)
		}
	}
	ch.pending = keep

	due := ch.followUps[:0:0]
	later := ch.followUps[:0]
	for _, f := range ch.followUps {
		if f.due > ch.tick {
			later = append(later, f)
			continue
		}
		due = append(due, f)
	}
	ch.followUps = later
	for _, f := range due {
		if err := ch.followUp(ctx, f, now); err != nil && !errors.Is(err, errNotEligible) {
			ch.fail(ctx, "follow-up", f.node.ref, err)
		}
	}

	for i := range changes {
		act := churnPattern[((ch.tick-1)*changes+i)%len(churnPattern)]
		if err := ch.do(ctx, act, now); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ch.stats.Errors++
			ch.log.Warn("churn action failed", "action", act.String(), "err", err)
		}
	}
	ch.log.Debug("churn tick", "tick", ch.tick, "objects", len(ch.nodes))
	return nil
}

func (ch *churner) fail(ctx context.Context, what string, r objRef, err error) {
	if ctx.Err() != nil {
		return
	}
	ch.stats.Errors++
	ch.log.Warn("churn step failed", "step", what, "kind", r.kind, "namespace", r.ns, "name", r.name, "err", err)
}

// do tries a few random candidates for the action; those the server state
// rules out (errNotEligible) are skipped.
func (ch *churner) do(ctx context.Context, act churnAction, now time.Time) error {
	if act == actSuspend && len(ch.suspended) > 0 {
		return ch.resume(ctx, now)
	}
	filter := map[churnAction]func(*node) bool{
		actBump: func(n *node) bool { return bumpable[n.ref.kind] },
		actFlip: func(n *node) bool { return n.hasStatus },
		actGeneration: func(n *node) bool {
			return n.hasStatus && n.ref.kind != KindExternalArtifact && n.ref.kind != KindImagePolicy
		},
		// The operator's kinds have no spec.suspend: it reads an annotation.
		actSuspend: func(n *node) bool {
			return n.ref.kind != KindExternalArtifact && n.ref.kind != KindHelmChart && groupOf(n.ref.kind) != groupOperator
		},
		actReplace: ch.deletable,
	}[act]
	var cands []*node
	for _, n := range ch.nodes {
		if filter(n) && !ch.isPending(n.ref) {
			cands = append(cands, n)
		}
	}
	const tries = 8
	for range min(tries, len(cands)) {
		n := cands[ch.r.IntN(len(cands))]
		var err error
		switch act {
		case actBump:
			err = ch.bump(ctx, n, now)
		case actFlip:
			err = ch.flip(ctx, n, now)
		case actGeneration:
			err = ch.bumpGeneration(ctx, n, now)
		case actSuspend:
			err = ch.suspend(ctx, n)
		case actReplace:
			err = ch.replace(ctx, n, now)
		}
		if !errors.Is(err, errNotEligible) {
			return err
		}
	}
	ch.log.Debug("churn found no eligible object", "action", act.String())
	return nil
}

func (ch *churner) isPending(r objRef) bool {
	for _, cu := range ch.pending {
		if cu.ref == r {
			return true
		}
	}
	for _, s := range ch.suspended {
		if s == r {
			return true
		}
	}
	return false
}

// get fetches a live object and the client for its kind.
func (ch *churner) get(ctx context.Context, group string, r objRef) (*unstructured.Unstructured, dynamic.ResourceInterface, error) {
	ri, _, err := ch.c.resource(group, r.kind, r.ns)
	if err != nil {
		return nil, nil, err
	}
	u, err := ri.Get(ctx, r.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		ch.untrack(r)
		return nil, nil, errNotEligible
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get %s: %w", r, err)
	}
	return u, ri, nil
}

// settled objects are not suspended, not stalled and not mid-reconciliation.
func settled(u *unstructured.Unstructured) bool {
	if s, _, _ := unstructured.NestedBool(u.Object, "spec", "suspend"); s {
		return false
	}
	if conditionStatus(u.Object, "Stalled") == "True" || conditionStatus(u.Object, "Reconciling") == "True" {
		return false
	}
	og, ok, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	return !ok || og == u.GetGeneration()
}

// Conditions, as controllers edit them: lastTransitionTime moves only when
// the status does.

// statusOf returns the object's status, adding an empty one if needed.
func statusOf(u *unstructured.Unstructured) map[string]any {
	st, ok := u.Object["status"].(map[string]any)
	if !ok {
		st = map[string]any{}
		u.Object["status"] = st
	}
	return st
}

func findCond(u *unstructured.Unstructured, typ string) map[string]any {
	conds, _ := statusOf(u)["conditions"].([]any)
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}

func setCond(u *unstructured.Unstructured, typ, status, reason, msg string, now time.Time) {
	gen := u.GetGeneration()
	if c := findCond(u, typ); c != nil {
		if c["status"] != status {
			c["lastTransitionTime"] = ts(now)
		}
		c["status"], c["reason"], c["message"], c["observedGeneration"] = status, reason, msg, gen
		return
	}
	st := statusOf(u)
	conds, _ := st["conditions"].([]any)
	st["conditions"] = append(conds, cond(typ, status, reason, msg, gen, now))
}

func removeCond(u *unstructured.Unstructured, typ string) {
	st := statusOf(u)
	conds, _ := st["conditions"].([]any)
	out := conds[:0]
	for _, c := range conds {
		if m, ok := c.(map[string]any); !ok || m["type"] != typ {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		delete(st, "conditions")
		return
	}
	st["conditions"] = out
}

func hasStatusMap(u *unstructured.Unstructured) bool {
	_, ok := u.Object["status"].(map[string]any)
	return ok
}

// Revisions.

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

// Readiness.

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

func (ch *churner) flip(ctx context.Context, n *node, now time.Time) error {
	u, ri, err := ch.get(ctx, n.group, n.ref)
	if err != nil {
		return err
	}
	if !hasStatusMap(u) || !settled(u) {
		return errNotEligible
	}
	f, known := failures[n.ref.kind]
	ready := conditionStatus(u.Object, "Ready")
	var to string
	switch {
	case !known:
		return errNotEligible
	case ready == "True":
		msg := f.message(u)
		setCond(u, "Ready", "False", f.reason, msg, now)
		if f.cond != "" {
			setCond(u, f.cond, "True", f.reason, msg, now)
		}
		if n.ref.kind == KindHelmRelease {
			setCond(u, "Released", "False", f.reason, msg, now)
			st := statusOf(u)
			for _, k := range []string{"failures", "upgradeFailures"} {
				c, _ := st[k].(int64)
				st[k] = c + 1
			}
		}
		to = "False"
	case ready == "False":
		reason, msg, ok := ch.recovered(u, now)
		if !ok {
			return errNotEligible
		}
		setCond(u, "Ready", "True", reason, msg, now)
		for _, t := range []string{"FetchFailed", "BuildFailed", "Remediated"} {
			removeCond(u, t)
		}
		if findCond(u, "Healthy") != nil {
			setCond(u, "Healthy", "True", "Succeeded", "Health check passed in 3.2s", now)
		}
		if n.ref.kind == KindHelmRelease {
			setCond(u, "Released", "True", reason, msg, now)
			st := statusOf(u)
			delete(st, "failures")
			delete(st, "installFailures")
			delete(st, "upgradeFailures")
		}
		to = "True"
	default:
		return errNotEligible
	}
	if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s: %w", n.ref, err)
	}
	ch.stats.ReadinessFlips++
	ch.log.Info("churn", "action", actFlip.String(), "kind", n.ref.kind, "namespace", n.ref.ns, "name", n.ref.name, "ready", to)
	return nil
}

// Generations.

// bumpGeneration edits the spec (a new interval); the controller marks the
// object as reconciling, and catches up on a later tick.
func (ch *churner) bumpGeneration(ctx context.Context, n *node, now time.Time) error {
	u, ri, err := ch.get(ctx, n.group, n.ref)
	if err != nil {
		return err
	}
	old, _, _ := unstructured.NestedString(u.Object, "spec", "interval")
	ready := findCondCopy(u, "Ready")
	if old == "" || !hasStatusMap(u) || !settled(u) || ready == nil {
		return errNotEligible
	}
	next := old
	for next == old {
		next = intervals[ch.r.IntN(len(intervals))]
	}
	if err := unstructured.SetNestedField(u.Object, next, "spec", "interval"); err != nil {
		return err
	}
	u, err = ri.Update(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update %s: %w", n.ref, err)
	}
	msg := "Reconciliation in progress"
	// The attempt has started: both conditions speak for the new
	// generation, observedGeneration waits for the attempt to end well.
	setCond(u, "Reconciling", "True", "Progressing", msg, now)
	setCond(u, "Ready", "Unknown", "Progressing", msg, now)
	if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s: %w", n.ref, err)
	}
	ch.stats.GenerationBumps++
	ch.pending = append(ch.pending, catchUp{ref: n.ref, group: n.group, due: ch.tick + 1 + ch.r.IntN(2), ready: ready})
	ch.log.Info("churn", "action", actGeneration.String(), "kind", n.ref.kind, "namespace", n.ref.ns, "name", n.ref.name, "generation", u.GetGeneration(), "interval", next)
	return nil
}

func findCondCopy(u *unstructured.Unstructured, typ string) map[string]any {
	if !hasStatusMap(u) {
		return nil
	}
	c := findCond(u, typ)
	if c == nil {
		return nil
	}
	out := make(map[string]any, len(c))
	for k, v := range c {
		out[k] = v
	}
	return out
}

// catchUp finishes a reconciliation: observedGeneration reaches generation.
func (ch *churner) catchUp(ctx context.Context, cu catchUp, now time.Time) error {
	u, ri, err := ch.get(ctx, cu.group, cu.ref)
	if errors.Is(err, errNotEligible) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err
	}
	if !hasStatusMap(u) {
		return nil
	}
	gen := u.GetGeneration()
	st := statusOf(u)
	st["observedGeneration"] = gen
	if _, ok := st["lastAttemptedGeneration"]; ok {
		st["lastAttemptedGeneration"] = gen
	}
	if cu.ready != nil {
		removeCond(u, "Reconciling")
		status, _ := cu.ready["status"].(string)
		reason, _ := cu.ready["reason"].(string)
		msg, _ := cu.ready["message"].(string)
		setCond(u, "Ready", status, reason, msg, now)
	}
	conds, _ := st["conditions"].([]any)
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok {
			m["observedGeneration"] = gen
		}
	}
	if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s: %w", cu.ref, err)
	}
	ch.stats.CatchUps++
	ch.log.Info("churn", "action", "catch-up", "kind", cu.ref.kind, "namespace", cu.ref.ns, "name", cu.ref.name, "observedGeneration", gen)
	return nil
}

// Suspension.

func (ch *churner) setSuspend(ctx context.Context, group string, r objRef, suspend bool) (*unstructured.Unstructured, error) {
	u, ri, err := ch.get(ctx, group, r)
	if err != nil {
		return nil, err
	}
	if cur, _, _ := unstructured.NestedBool(u.Object, "spec", "suspend"); cur == suspend {
		return nil, errNotEligible
	}
	if suspend {
		err = unstructured.SetNestedField(u.Object, true, "spec", "suspend")
	} else {
		unstructured.RemoveNestedField(u.Object, "spec", "suspend")
	}
	if err != nil {
		return nil, err
	}
	u, err = ri.Update(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update %s: %w", r, err)
	}
	return u, nil
}

// suspend stops reconciling an object. Suspending is a spec change that the
// controller handles on its suspended path (docs/flux-semantics.md, rule 2):
// source-controller still rewrites Ready and moves observedGeneration,
// helm-controller moves observedGeneration, the other controllers move it
// only when Ready is True; none of them but source-controller touches the
// conditions.
func (ch *churner) suspend(ctx context.Context, n *node) error {
	u, err := ch.setSuspend(ctx, n.group, n.ref, true)
	if err != nil {
		return err
	}
	if ready := findCondCopy(u, "Ready"); ready != nil {
		gen := u.GetGeneration()
		switch {
		case n.group == groupSource:
			findCond(u, "Ready")["observedGeneration"] = gen
			statusOf(u)["observedGeneration"] = gen
		case n.ref.kind == KindHelmRelease || ready["status"] == "True":
			statusOf(u)["observedGeneration"] = gen
		}
		ri, _, err := ch.c.resource(n.group, n.ref.kind, n.ref.ns)
		if err != nil {
			return err
		}
		if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update status of %s: %w", n.ref, err)
		}
	}
	ch.suspended = append(ch.suspended, n.ref)
	ch.stats.Suspends++
	ch.log.Info("churn", "action", "suspend", "kind", n.ref.kind, "namespace", n.ref.ns, "name", n.ref.name, "generation", u.GetGeneration())
	return nil
}

// resume the longest-suspended object; its controller catches up next tick.
func (ch *churner) resume(ctx context.Context, now time.Time) error {
	r := ch.suspended[0]
	ch.suspended = ch.suspended[1:]
	var n *node
	for _, c := range ch.nodes {
		if c.ref == r {
			n = c
		}
	}
	if n == nil {
		return nil
	}
	if _, err := ch.setSuspend(ctx, n.group, r, false); err != nil {
		if errors.Is(err, errNotEligible) {
			return nil
		}
		return err
	}
	ch.stats.Resumes++
	if n.hasStatus {
		ch.pending = append(ch.pending, catchUp{ref: r, group: n.group, due: ch.tick + 1})
	}
	ch.log.Info("churn", "action", "resume", "kind", r.kind, "namespace", r.ns, "name", r.name)
	return nil
}

// Deletion and creation.

// deletable are leaves: nothing in the fleet consumes or waits for them.
func (ch *churner) deletable(n *node) bool {
	switch n.ref.kind {
	case KindKustomization:
		for _, o := range ch.nodes {
			if o.dependsOn == n.ref {
				return false
			}
		}
		return true
	case KindHelmRelease, KindAlert, KindReceiver, KindImageUpdateAutomation:
		return true
	}
	return false
}

// replace deletes a leaf (a HelmRelease with the HelmChart made for it) and
// creates a new stack of objects somewhere in the fleet.
func (ch *churner) replace(ctx context.Context, n *node, now time.Time) error {
	gone := []*node{n}
	if n.ref.kind == KindHelmRelease && n.consumes.kind == KindHelmChart {
		for _, c := range ch.nodes {
			if c.ref == n.consumes {
				gone = append(gone, c)
			}
		}
	}
	for _, d := range gone {
		ri, _, err := ch.c.resource(d.group, d.ref.kind, d.ref.ns)
		if err != nil {
			return err
		}
		if err := ri.Delete(ctx, d.ref.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s: %w", d.ref, err)
		}
		// The controller's finalizer holds the object until its
		// reconcileDelete has cleaned up and removed it (SC, KC and HC
		// reconcileDelete); the churner plays that controller.
		if _, err := ri.Patch(ctx, d.ref.name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove the finalizers of %s: %w", d.ref, err)
		}
		ch.untrack(d.ref)
		ch.stats.Deletes++
		ch.log.Info("churn", "action", "delete", "kind", d.ref.kind, "namespace", d.ref.ns, "name", d.ref.name)
	}

	ns := ch.namespaces[ch.r.IntN(len(ch.namespaces))]
	ch.g.now = now
	start := len(ch.g.out)
	st := stacks[ch.r.IntN(len(stacks))]
	st.add(ch.g, ns)
	for _, o := range ch.g.out[start:] {
		if err := ch.c.create(ctx, o); err != nil {
			return err
		}
		ch.track(o)
		ch.stats.Creates++
		ch.log.Info("churn", "action", "create", "kind", o.Kind, "namespace", o.Namespace(), "name", o.Name(), "state", string(o.State))
	}
	ch.g.out = ch.g.out[:start] // created objects live on the server now
	return nil
}
