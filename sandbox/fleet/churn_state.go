package fleet

// Churn of state: readiness flips, generation bumps and their catch-up,
// suspension and resumption.

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

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
