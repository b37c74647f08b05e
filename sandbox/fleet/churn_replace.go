package fleet

// Deletion and creation: a leaf of the fleet replaced by a new stack.

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

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
