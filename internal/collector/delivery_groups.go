package collector

import (
	"bytes"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/flux-exporter/flux_exporter/internal/catalog"
)

// The delivery keys per namespace: each object's counts (delivery.go) are
// added up, as they grow, per namespace, kind and the labels that
// --metric-labels-allowlist selects for the kind (a team, say). Counters
// that a user reads through increase() must only grow, so an object that
// leaves a group (deleted, or relabelled to another team) takes nothing of
// what it added with it; a group goes away with its last object, and comes
// back at zero. This is the default set's view of delivery: one group per
// namespace and kind costs what one object's histograms cost, and the
// per-object families stay available as opt-in.

var (
	deliveryGroupChangesFamily = aggregateFamily(catalog.Namespace+"_delivery_changes_total", counterType, nil,
		"Changes Flux applied to the Kustomizations or HelmReleases of a namespace, per kind and allowlisted label, recorded after the exporter started: each new digest of the built manifests in a Kustomization's status.history, each new Helm release version in a HelmRelease's (rollbacks included). result is failed when the history entry that recorded the change has another lastReconciledStatus than ReconciliationSucceeded, or the release's status is failed (or uninstalled, by install remediation); else succeeded. The per-object breakdown is flux_resource_delivery_changes_total.",
		"result")
	deliveryGroupFailedFamily = aggregateFamily(catalog.Namespace+"_delivery_failed_changes_total", counterType, nil,
		"Changes that failed, per namespace, kind and allowlisted label: Flux recorded them failing (a failed history entry or release), a Helm rollback superseded them, or the object went Ready=False because of them before the next change. Each change counts once, when the exporter sees it fail.")
	deliveryGroupRollbacksFamily = aggregateFamily(catalog.Namespace+"_delivery_rollbacks_total", counterType, nil,
		"Helm rollbacks of the HelmReleases of a namespace, per allowlisted label, recorded after the exporter started: releases in status.history with action rollback and status deployed, each once.")
	deliveryGroupLeadTimeFamily = aggregateFamily(catalog.Namespace+"_delivery_lead_time_seconds", histogramType, leadTimeBuckets,
		"Time from a source's new artifact (status.artifact.lastUpdateTime) to the first successful reconcile of that revision by a Kustomization or HelmRelease of the namespace (a ReconciliationSucceeded history entry's firstReconciled, or the release's lastDeployed), per kind and allowlisted label, in seconds; observed once per object and revision. Flux records no commit time, so it starts at the fetch.")
	deliveryGroupRestoreFamily = aggregateFamily(catalog.Namespace+"_delivery_time_to_restore_seconds", histogramType, restoreBuckets,
		"Time from an object's Ready condition going False to it going True again, or to a successful Helm rollback (Remediated True RollbackSucceeded), by the conditions' lastTransitionTime, per namespace, kind and allowlisted label, in seconds.")
)

// deliveryGroup is the counts of the objects of one namespace and kind
// with the same allowlisted labels.
type deliveryGroup struct {
	key string
	// labels are exported_namespace, kind and the allowlisted labels,
	// rendered `l="v",...` in name order.
	labels  []byte
	members int
	totals  deliveryCounts
	helm    bool
	// bad is set when the labels cannot be exposed; the group then
	// renders nothing.
	bad      bool
	rendered atomic.Pointer[Record]
}

// groupKey names a group: kind, namespace and the label pairs.
func groupKey(kind, namespace string, pairs []labelPair) string {
	var b strings.Builder
	b.WriteString(kind)
	b.WriteByte(0)
	b.WriteString(namespace)
	for _, p := range pairs {
		b.WriteByte(0)
		b.WriteString(p.name)
		b.WriteByte('=')
		b.WriteString(p.value)
	}
	return b.String()
}

// join moves the object into the group of its namespace, kind and labels,
// if it is not there yet. Its counts so far stay where they were added.
func (t *deliveryTracker) join(e *deliveryEntry, pairs []labelPair) {
	key := groupKey(e.key.kind, e.key.namespace, pairs)
	if e.group != nil && e.group.key == key {
		return
	}
	t.leave(e)
	g := t.groups[key]
	if g == nil {
		g = &deliveryGroup{key: key, helm: e.key.kind == "HelmRelease"}
		all := append([]labelPair{{"exported_namespace", e.key.namespace}, {"kind", e.key.kind}}, pairs...)
		body, err := appendLabelBody(nil, all)
		g.labels, g.bad = body, err != nil
		t.groups[key] = g
		g.render(t.on)
	}
	g.members++
	e.group = g
	e.accounted = e.deliveryCounts.clone()
}

// leave takes the object out of its group, and drops a group left empty.
func (t *deliveryTracker) leave(e *deliveryEntry) {
	g := e.group
	if g == nil {
		return
	}
	e.group = nil
	if g.members--; g.members == 0 {
		delete(t.groups, g.key)
	}
}

// account adds to the object's group what its counts gained since the
// last time, and renders the group when they did.
func (t *deliveryTracker) account(e *deliveryEntry) {
	g := e.group
	if g == nil {
		return
	}
	if g.totals.add(&e.deliveryCounts, &e.accounted) {
		e.accounted = e.deliveryCounts.clone()
		g.render(t.on)
	}
}

// add adds now minus then to c, and tells whether that was anything.
func (c *deliveryCounts) add(now, then *deliveryCounts) bool {
	grew := false
	for _, p := range []struct{ to, now, then *float64 }{
		{&c.succeeded, &now.succeeded, &then.succeeded},
		{&c.failed, &now.failed, &then.failed},
		{&c.failedChanges, &now.failedChanges, &then.failedChanges},
		{&c.rollbacks, &now.rollbacks, &then.rollbacks},
	} {
		if d := *p.now - *p.then; d != 0 {
			*p.to += d
			grew = true
		}
	}
	grew = c.leadTime.add(&now.leadTime, &then.leadTime) || grew
	return c.restore.add(&now.restore, &then.restore) || grew
}

// add adds now's observations that then has not to h.
func (h *histogram) add(now, then *histogram) bool {
	if now.count == then.count {
		return false
	}
	if h.counts == nil {
		h.counts = make([]uint64, len(now.counts))
	}
	for i := range now.counts {
		h.counts[i] += now.counts[i]
		if then.counts != nil {
			h.counts[i] -= then.counts[i]
		}
	}
	h.sum += now.sum - then.sum
	h.count += now.count - then.count
	return true
}

func (c deliveryCounts) clone() deliveryCounts {
	c.leadTime.counts = append([]uint64(nil), c.leadTime.counts...)
	c.restore.counts = append([]uint64(nil), c.restore.counts...)
	return c
}

// render writes the group's series, the families on, into a new record,
// and makes it the one scrapes copy. Every series is there from the
// group's first object on, at zero too: a counter that appears at 1 is an
// increase Prometheus never sees.
func (g *deliveryGroup) render(on familySet) {
	if g.bad {
		return
	}
	rec := &Record{}
	line := func(f *family, suffix, extra string, v float64) {
		if !on.has(f) {
			return
		}
		rec.buf = append(rec.buf, f.name...)
		rec.buf = append(rec.buf, suffix...)
		rec.buf = append(rec.buf, '{')
		rec.buf = append(rec.buf, g.labels...)
		rec.buf = append(rec.buf, extra...)
		rec.buf = append(rec.buf, '}', ' ')
		rec.series = append(rec.series, sample{family: uint16(f.id), end: uint32(len(rec.buf)), value: v})
	}
	c := &g.totals
	line(deliveryGroupChangesFamily, "", `,result="`+resultSucceeded+`"`, c.succeeded)
	line(deliveryGroupChangesFamily, "", `,result="`+resultFailed+`"`, c.failed)
	line(deliveryGroupFailedFamily, "", "", c.failedChanges)
	if g.helm {
		line(deliveryGroupRollbacksFamily, "", "", c.rollbacks)
	}
	for _, h := range []struct {
		f *family
		h *histogram
	}{{deliveryGroupLeadTimeFamily, &c.leadTime}, {deliveryGroupRestoreFamily, &c.restore}} {
		cumulative := uint64(0)
		for i, b := range h.f.buckets {
			if h.h.counts != nil {
				cumulative += h.h.counts[i]
			}
			line(h.f, "_bucket", `,le="`+string(appendFloat(nil, b, textFloat))+`"`, float64(cumulative))
		}
		line(h.f, "_bucket", `,le="+Inf"`, float64(h.h.count))
		line(h.f, "_sum", "", h.h.sum)
		line(h.f, "_count", "", float64(h.h.count))
	}
	rec.groupByFamily()
	g.rendered.Store(rec)
}

// records are the groups' rendered series.
func (t *deliveryTracker) records() []*Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	groups := make([]*deliveryGroup, 0, len(t.groups))
	for _, g := range t.groups {
		groups = append(groups, g)
	}
	// In label order, as client_golang writes a family's series.
	slices.SortFunc(groups, func(a, b *deliveryGroup) int { return bytes.Compare(a.labels, b.labels) })
	out := make([]*Record, 0, len(groups))
	for _, g := range groups {
		if rec := g.rendered.Load(); rec != nil {
			out = append(out, rec)
		}
	}
	return out
}
