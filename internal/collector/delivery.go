package collector

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// Delivery metrics, the four DORA keys, from what Flux itself records
// (docs/delivery.md gives the rules, docs/flux-semantics.md rules 7, 8 and
// 11 the fields):
//
//   - a change is a new digest in a Kustomization's status.history, or a new
//     release version in a HelmRelease's;
//   - a change failed when Flux recorded it failing (a history entry of that
//     digest with another status than ReconciliationSucceeded; a release of
//     status failed), when a rollback superseded it, or when the object went
//     Ready=False because of it before the next change;
//   - lead time runs from the source artifact's lastUpdateTime to the first
//     successful reconcile of that revision (history firstReconciled, or the
//     release's lastDeployed: Helm gives every version the firstDeployed of
//     the release's first install), once per object and revision;
//   - time to restore runs from Ready going False to Ready going True again,
//     or to a successful rollback, by the conditions' lastTransitionTime.
//
// Counts need state across events, which a record rendered from one object
// cannot hold: the tracker keeps it per object (by UID), and renders each
// object's delivery series into a record of their own whenever they change.
// The object's record points at it, so a scrape copies those bytes like any
// other and a deleted object's series go with its record.

var (
	deliveryChangesFamily = perObjectCounter("resource_delivery_changes_total",
		"Changes Flux applied to the object: each new digest of the built manifests in a Kustomization's status.history, each new Helm release version in a HelmRelease's status.history (rollbacks included), recorded after the exporter started. result is failed when the history entry that recorded the change has another lastReconciledStatus than ReconciliationSucceeded, or the release's status is failed (or uninstalled, by install remediation); else succeeded. flux_delivery_changes_total adds them up per namespace.",
		"result").offByDefault()
	deliveryFailedChangesFamily = perObjectCounter("resource_delivery_failed_changes_total",
		"Changes that failed: Flux recorded them failing (a failed history entry or release), a Helm rollback superseded them, or the object went Ready=False because of them (Ready's reason is not DependencyNotReady, ArtifactFailed, SourceNotReady or a remediation, and status.lastAttemptedRevision is the change's revision) before the next change. Each change counts once, when the exporter sees it fail. flux_delivery_failed_changes_total adds them up per namespace.").offByDefault()
	deliveryRollbacksFamily = perObjectCounter("resource_delivery_rollbacks_total",
		"Helm rollbacks of a HelmRelease recorded after the exporter started: releases in status.history with action rollback and status deployed, each once. flux_delivery_last_rollback_info names the newest.").offByDefault()
	deliveryLastRollbackFamily = perObject("delivery_last_rollback_info",
		"The newest Helm rollback of a HelmRelease that status.history records: failed_version and failed_chart_version are the release it rolled back (the version below the rollback in status.history), rollback_version the release the rollback created and restored_chart_version its chart version, that of the release restored. Value is always 1.",
		"failed_version", "failed_chart_version", "rollback_version", "restored_chart_version")
	deliveryLeadTimeFamily = perObjectHistogram("resource_delivery_lead_time_seconds",
		"Time from a source's new artifact (status.artifact.lastUpdateTime of the sourceRef, or of the HelmRelease's chart) to the first successful reconcile of that revision by this object (status.history firstReconciled of a ReconciliationSucceeded entry whose metadata.revision is the artifact's, or the release's lastDeployed, when Helm deployed that version), in seconds; observed once per object and revision. Flux records no commit time, so it starts at the fetch.",
		leadTimeBuckets...).offByDefault()
	deliveryTimeToRestoreFamily = perObjectHistogram("resource_delivery_time_to_restore_seconds",
		"Time from the Ready condition going False to it going True again, or to a successful Helm rollback (Remediated True RollbackSucceeded), by the conditions' lastTransitionTime, in seconds. An object that is not Ready when the exporter starts counts from its Ready lastTransitionTime.",
		restoreBuckets...).offByDefault()
)

// Histogram bounds sit on DORA's band limits, with finer ones below an
// hour, where GitOps reconciles.
var (
	leadTimeBuckets = []float64{60, 300, 900, 3600, 86400, 604800, 2592000}
	restoreBuckets  = []float64{60, 300, 900, 3600, 86400, 604800}
)

// Flux's words the tracker reads.
const (
	reconciliationSucceeded = "ReconciliationSucceeded" // KC history lastReconciledStatus
	releaseFailed           = "failed"                  // Helm release status
	releaseDeployed         = "deployed"
	actionRollback          = "rollback" // HC v2 ReleaseActionRollback
	rollbackSucceeded       = "RollbackSucceeded"
	resultSucceeded         = "succeeded"
	resultFailed            = "failed"
	// maxLeadRevisions bounds the revisions remembered per object as having
	// had their lead time observed.
	maxLeadRevisions = 16
)

// notTheChangesFault are Ready=False reasons that blame something else than
// the applied change (an upstream object, the source), or that a rollback
// already counts.
var notTheChangesFault = []string{"DependencyNotReady", "ArtifactFailed", "SourceNotReady", "Progressing", rollbackSucceeded, "UninstallSucceeded"}

// deliveryTracker keeps every Kustomization's and HelmRelease's delivery
// state, and the sources' current artifacts that lead time needs.
type deliveryTracker struct {
	mu      sync.Mutex
	objects map[objectKey]*deliveryEntry
	sources map[objectKey]artifactSeen
	// waiting are the objects whose newest successful revision waits for
	// its source's artifact to show that revision (the source's event may
	// come after the object's).
	waiting map[objectKey]map[*deliveryEntry]bool
	swept   time.Time
	// groups add the objects' counts up per namespace, kind and allowlisted
	// labels, by deliveryGroup.key.
	groups map[string]*deliveryGroup
	// since is DecoderOptions.CountSince in Unix seconds: changes Flux
	// recorded until then are not counted.
	since float64
	// on is the families its records render (Decoder.on).
	on familySet
}

// newDeliveryTracker starts the tracker a Decoder feeds.
func newDeliveryTracker(on familySet, since time.Time) *deliveryTracker {
	t := &deliveryTracker{objects: map[objectKey]*deliveryEntry{}, sources: map[objectKey]artifactSeen{},
		waiting: map[objectKey]map[*deliveryEntry]bool{}, groups: map[string]*deliveryGroup{}, on: on}
	if !since.IsZero() {
		t.since = float64(since.Unix())
	}
	return t
}

// artifactSeen is a source's current artifact: revision and lastUpdateTime.
type artifactSeen struct {
	revision string
	updated  float64
	seen     time.Time
}

// deliveryEntry is one object's delivery state.
type deliveryEntry struct {
	uid         string
	key         objectKey
	lastDecoded time.Time

	// watermark is the newest change counted: a Kustomization's newest
	// history firstReconciled (Unix seconds), a HelmRelease's newest release
	// version. Entries at or below it have been counted.
	watermark float64
	// known are the changes status.history still holds, by digest or
	// release version.
	known map[string]*change
	// current is the change the object last reconciled: history[0].
	current string

	// deliveryCounts are the object's counts since the tracker first saw
	// it; accounted is what of them its group has been given.
	deliveryCounts
	accounted    deliveryCounts
	group        *deliveryGroup
	lastRollback []string // label values of delivery_last_rollback_info

	source      objectKey // where the artifact comes from
	pending     *pendingLead
	leadSeen    []string // revisions whose lead time was observed, newest last
	outage      bool     // Ready went False and has not come back
	outageStart float64  // when it went False
	restoredAt  float64  // when the last outage ended

	rendered atomic.Pointer[Record]
}

// deliveryCounts are the counters and histograms of one object, or of a
// group of them.
type deliveryCounts struct {
	succeeded, failed, failedChanges, rollbacks float64
	leadTime, restore                           histogram
}

type change struct {
	revision string
	failed   bool
	// news is whether the change itself was counted, not remembered
	// from before the exporter started.
	news bool
}

// counted tells whether a change Flux recorded at at counts: changes
// recorded before the tracker's since are what status.history held when
// the exporter started, which a restarted exporter must not count again
// (docs/delivery.md, "Restarts").
func (t *deliveryTracker) counted(at float64) bool {
	return at > t.since
}

// pendingLead is a successful revision whose lead time is not yet known.
type pendingLead struct {
	revision string
	at       float64 // firstReconciled, or a release's lastDeployed
}

// histogram counts observations per bucket (not cumulative).
type histogram struct {
	counts []uint64 // len(buckets)+1, the last for +Inf
	sum    float64
	count  uint64
}

func (h *histogram) observe(bounds []float64, v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(bounds)+1)
	}
	i, _ := slices.BinarySearch(bounds, v) // le: the first bound >= v
	h.counts[i]++
	h.sum += v
	h.count++
}

// record is the object's rendered delivery series, nil for an object that
// has none (a tracker entry is made only for Kustomizations and
// HelmReleases).
func (e *deliveryEntry) record() *Record {
	if e == nil {
		return nil
	}
	return e.rendered.Load()
}

// ksSnapshot is what the tracker reads of a Kustomization history entry.
type ksSnapshot struct {
	digest, status, revision string
	first, last              float64
}

// hrSnapshot is what it reads of a HelmRelease history snapshot.
type hrSnapshot struct {
	version                                 float64
	status, action, chartVersion, ociDigest string
	deployed                                float64
}

// readyState is what it reads of the conditions.
type readyState struct {
	status, reason string
	since          float64
	// rolledBack is when Remediated went True RollbackSucceeded, 0 if not.
	rolledBack float64
}

// sawArtifact records a source's current artifact, and settles the lead
// time of the objects waiting for that revision.
func (t *deliveryTracker) sawArtifact(key objectKey, revision string, updated float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.sources[key]; ok && old.revision == revision && old.updated == updated {
		old.seen = time.Now()
		t.sources[key] = old
		return
	}
	t.sources[key] = artifactSeen{revision: revision, updated: updated, seen: time.Now()}
	for e := range t.waiting[key] {
		if t.settleLead(e) {
			t.account(e)
			e.render(t.on)
		}
	}
}

// observe updates the object's delivery state from the object as it is
// now, renders its series and its group's, and returns its entry. group
// are the allowlisted label pairs of the object that its group adds to
// the namespace and kind.
func (t *deliveryTracker) observe(kind string, rec *Record, r *reader, conds []condition, group []labelPair) *deliveryEntry {
	key := objectKey{kind, rec.Namespace, rec.Name}
	uid := r.str("metadata", "uid")
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.objects[key]
	var gone *deliveryEntry
	if e == nil || e.uid != uid {
		// A new object, or one deleted and made again under the same name:
		// its history starts over, and so do its series.
		if e != nil {
			t.unwait(e)
			gone = e
		}
		e = &deliveryEntry{uid: uid, key: key, known: map[string]*change{}}
		t.objects[key] = e
	}
	e.lastDecoded = time.Now()
	t.join(e, group)
	// Only now: a group the object made again rejoins keeps its counts.
	if gone != nil {
		t.leave(gone)
	}
	if src := sourceOf(kind, rec.refs); src != e.source {
		t.unwait(e)
		e.source = src
	}
	ready := readyOf(conds)
	attempted := r.str("status", "lastAttemptedRevision")
	switch kind {
	case "Kustomization":
		e.kustomization(readKustomizationHistory(r), t.counted)
	case "HelmRelease":
		e.helmRelease(readHelmReleaseHistory(r), t.counted)
	}
	e.readiness(ready, attempted, kind == "HelmRelease", t.counted)
	if e.pending != nil && e.source != (objectKey{}) && !t.settleLead(e) {
		if t.waiting[e.source] == nil {
			t.waiting[e.source] = map[*deliveryEntry]bool{}
		}
		t.waiting[e.source][e] = true
	}
	t.account(e)
	e.render(t.on)
	return e
}

func (t *deliveryTracker) unwait(e *deliveryEntry) {
	if w := t.waiting[e.source]; w != nil {
		delete(w, e)
		if len(w) == 0 {
			delete(t.waiting, e.source)
		}
	}
}

// settleLead observes the pending lead time once the source's artifact
// shows its revision; it reports whether it did.
func (t *deliveryTracker) settleLead(e *deliveryEntry) bool {
	p := e.pending
	if p == nil {
		return false
	}
	src, ok := t.sources[e.source]
	if !ok || !sameRevision(src.revision, p.revision) {
		return false
	}
	e.pending = nil
	t.unwait(e)
	e.leadSeen = append(e.leadSeen, p.revision)
	if len(e.leadSeen) > maxLeadRevisions {
		e.leadSeen = e.leadSeen[1:]
	}
	// An apply before the artifact's time means the artifact was stored
	// again with the same revision after it was applied: there is no lead
	// time to tell.
	if d := p.at - src.updated; d >= 0 {
		e.leadTime.observe(deliveryLeadTimeFamily.buckets, d)
	}
	return true
}

// sameRevision matches a source artifact's revision with a change's: a
// Kustomization's history metadata.revision is the artifact revision
// itself; a release's chart version is a HelmChart's revision, or the tag
// before "@" of an OCIRepository's "<tag>@sha256:<digest>".
func sameRevision(artifact, change string) bool {
	if artifact == change {
		return true
	}
	tag, _, ok := strings.Cut(artifact, "@")
	return ok && tag == change
}

// wantLead makes revision, reconciled successfully at at, the one whose
// lead time is waited for, unless it was observed before.
func (e *deliveryEntry) wantLead(revision string, at float64) {
	if revision == "" || slices.Contains(e.leadSeen, revision) {
		return
	}
	if e.pending == nil || at >= e.pending.at {
		e.pending = &pendingLead{revision: revision, at: at}
	}
}

// kustomization counts the history entries newer than the watermark, oldest
// first, that counted says count by their firstReconciled; the others it
// only remembers. An entry whose digest holds an older entry records a new
// outcome of the same change, not a new change.
func (e *deliveryEntry) kustomization(h []ksSnapshot, counted func(float64) bool) {
	if len(h) == 0 {
		return
	}
	newest := h[0]
	for _, s := range h[1:] {
		if s.last > newest.last {
			newest = s
		}
	}
	slices.SortStableFunc(h, func(a, b ksSnapshot) int { return compareFloat(a.first, b.first) })
	for _, s := range h {
		if s.first <= e.watermark {
			continue
		}
		e.watermark = s.first
		count := counted(s.first)
		c := e.known[s.digest]
		if c == nil {
			c = &change{revision: s.revision, news: count}
			e.known[s.digest] = c
			switch {
			case !count:
			case s.status == reconciliationSucceeded:
				e.succeeded++
			default:
				e.failed++
			}
		}
		switch {
		case s.status != reconciliationSucceeded:
			e.markFailed(c, count)
		case count:
			e.wantLead(s.revision, s.first)
		}
	}
	e.current = newest.digest
	// A revert can re-apply known manifests from a new revision: the entry
	// keeps its digest and takes the revision (History.Upsert).
	if c := e.known[newest.digest]; c != nil {
		c.revision = newest.revision
	}
	// A digest that has left the history is forgotten: should the same
	// manifests come back, Flux records them as a new entry, a new change.
	for d := range e.known {
		if !slices.ContainsFunc(h, func(s ksSnapshot) bool { return s.digest == d }) {
			delete(e.known, d)
		}
	}
}

// helmRelease counts the releases newer than the watermark, oldest first,
// stopping at one Helm has not finished (pending-install, pending-upgrade,
// pending-rollback); those that counted says not to count by their
// lastDeployed it only remembers.
func (e *deliveryEntry) helmRelease(h []hrSnapshot, counted func(float64) bool) {
	if len(h) == 0 {
		return
	}
	slices.SortStableFunc(h, func(a, b hrSnapshot) int { return compareFloat(a.version, b.version) })
	for i, s := range h {
		if s.version <= e.watermark {
			continue
		}
		if s.status == "" || strings.HasPrefix(s.status, "pending") {
			break
		}
		e.watermark = s.version
		count := counted(s.deployed)
		id := strconv.FormatFloat(s.version, 'f', -1, 64)
		c := &change{revision: s.chartVersion, news: count}
		e.known[id] = c
		switch {
		case releaseFailedStatus(s):
			e.failed += b2f(count)
			e.markFailed(c, count)
		case count:
			e.succeeded++
			e.wantLead(s.chartVersion, s.deployed)
		}
		// helm-controller marks the release a rollback restored with action
		// rollback too, but only the release the rollback made is deployed.
		if s.action == actionRollback && s.status == releaseDeployed && i > 0 {
			prev := h[i-1]
			prevID := strconv.FormatFloat(prev.version, 'f', -1, 64)
			e.rollbacks += b2f(count)
			e.lastRollback = []string{prevID, prev.chartVersion, id, s.chartVersion}
			if pc := e.known[prevID]; pc != nil {
				e.markFailed(pc, count)
			}
		}
	}
	newest := h[len(h)-1]
	e.current = strconv.FormatFloat(newest.version, 'f', -1, 64)
	for id := range e.known {
		if !slices.ContainsFunc(h, func(s hrSnapshot) bool { return strconv.FormatFloat(s.version, 'f', -1, 64) == id }) {
			delete(e.known, id)
		}
	}
}

// releaseFailedStatus tells whether a release recorded a failed change:
// Helm's status failed, or a release helm-controller uninstalled to
// remediate a failed install (it updates the failed snapshot to
// uninstalled, action uninstall-remediation), so that a restarted exporter
// reading the uninstalled release agrees with one that saw it fail.
func releaseFailedStatus(s hrSnapshot) bool {
	return s.status == releaseFailed || s.action == "uninstall-remediation" || s.status == "uninstalled" || s.status == "uninstalling"
}

// markFailed fails a change once; count says whether that is news to
// count, or what status.history already held when the exporter started.
func (e *deliveryEntry) markFailed(c *change, count bool) {
	if !c.failed {
		c.failed = true
		e.failedChanges += b2f(count)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// readiness follows Ready: an outage starts when it goes False and ends
// when it goes True, or when a rollback succeeds; and a Ready=False that
// the current change caused fails that change. What counted says happened
// before the exporter started (Ready's lastTransitionTime, the rollback's)
// ends an outage or fails a change without being counted again.
func (e *deliveryEntry) readiness(r readyState, attempted string, helm bool, counted func(float64) bool) {
	switch r.status {
	case "False":
		// Ready's lastTransitionTime moves only when its status changes,
		// so an outage a rollback ended does not start again until Ready
		// has been True or Unknown in between.
		if !e.outage && r.since > e.restoredAt {
			e.outage, e.outageStart = true, r.since
		}
		if e.outage && r.rolledBack >= e.outageStart && r.rolledBack > 0 {
			e.endOutage(r.rolledBack, counted(r.rolledBack))
		}
		c := e.known[e.current]
		if c != nil && !slices.Contains(notTheChangesFault, r.reason) && causedBy(attempted, c.revision, helm) {
			e.markFailed(c, c.news || counted(r.since))
		}
	case "True":
		if e.outage {
			e.endOutage(r.since, counted(r.since))
		}
	}
}

func (e *deliveryEntry) endOutage(at float64, count bool) {
	e.outage, e.restoredAt = false, at
	if d := at - e.outageStart; d >= 0 && count {
		e.restore.observe(deliveryTimeToRestoreFamily.buckets, d)
	}
}

// causedBy tells whether the revision the controller last attempted is the
// change's: otherwise Ready=False is about a newer revision that Flux
// recorded no change for (a Kustomization that does not build), not about
// the applied one. helm-controller appends "+<digest>" for OCI charts.
func causedBy(attempted, revision string, helm bool) bool {
	if attempted == revision {
		return true
	}
	return helm && strings.HasPrefix(attempted, revision+"+")
}

// render writes the object's delivery series, the families on, into a new
// record, and makes it the one scrapes copy.
func (e *deliveryEntry) render(on familySet) {
	rec := &Record{Namespace: e.key.namespace, Name: e.key.name}
	w := recordWriter{rec: rec, r: &reader{}, on: on, object: []string{e.key.kind, e.key.name, e.key.namespace}}
	object, err := appendObjectLabels(nil, w.object)
	if err != nil {
		return // Decode rendered nothing for it either
	}
	rec.object = object
	// Every series from the first sight on, at zero too: a counter or
	// bucket that appears at 1 is an increase Prometheus never sees.
	w.add(deliveryChangesFamily, e.succeeded, resultSucceeded)
	w.add(deliveryChangesFamily, e.failed, resultFailed)
	w.add(deliveryFailedChangesFamily, e.failedChanges)
	if e.key.kind == "HelmRelease" {
		w.add(deliveryRollbacksFamily, e.rollbacks)
		if e.lastRollback != nil {
			w.add(deliveryLastRollbackFamily, 1, e.lastRollback...)
		}
	}
	w.addHistogram(deliveryLeadTimeFamily, &e.leadTime)
	w.addHistogram(deliveryTimeToRestoreFamily, &e.restore)
	rec.groupByFamily()
	e.rendered.Store(rec)
}

// addHistogram renders a histogram's series whole: each bucket with le
// last, then _sum and _count, as client_golang writes them.
func (w *recordWriter) addHistogram(f *family, h *histogram) {
	if !w.on.has(f) {
		return
	}
	rec := w.rec
	line := func(suffix string, le []byte, v float64) {
		rec.buf = append(rec.buf, f.name...)
		rec.buf = append(rec.buf, suffix...)
		rec.buf = append(rec.buf, '{')
		rec.buf = append(rec.buf, rec.object...)
		if le != nil {
			rec.buf = append(rec.buf, `,le="`...)
			rec.buf = append(rec.buf, le...)
			rec.buf = append(rec.buf, '"')
		}
		rec.buf = append(rec.buf, '}', ' ')
		rec.series = append(rec.series, sample{family: uint16(f.id), end: uint32(len(rec.buf)), value: v})
	}
	cumulative := uint64(0)
	for i, b := range f.buckets {
		if h.counts != nil {
			cumulative += h.counts[i]
		}
		line("_bucket", appendFloat(nil, b, textFloat), float64(cumulative))
	}
	line("_bucket", []byte("+Inf"), float64(h.count))
	line("_sum", nil, h.sum)
	line("_count", nil, float64(h.count))
}

func compareFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sourceOf is where an object's artifact comes from: a Kustomization's
// sourceRef; a HelmRelease's chart (spec.chartRef, or the HelmChart
// helm-controller made, status.helmChart).
func sourceOf(kind string, refs []ref) objectKey {
	want := relSource
	if kind == "HelmRelease" {
		want = relChart
	}
	for _, r := range refs {
		if r.relation == want {
			return objectKey{r.kind, r.namespace, r.name}
		}
	}
	return objectKey{}
}

func readyOf(conds []condition) readyState {
	var out readyState
	for _, c := range conds {
		switch {
		case c.typ == "Ready":
			out.status, out.reason, out.since = c.status, c.reason, c.lastTransition
		case c.typ == "Remediated" && c.status == "True" && c.reason == rollbackSucceeded:
			out.rolledBack = c.lastTransition
		}
	}
	return out
}

// readKustomizationHistory reads status.history; entries without a digest
// or firstReconciled cannot be told apart or ordered, and are skipped.
func readKustomizationHistory(r *reader) []ksSnapshot {
	list := r.list("status", "history")
	out := make([]ksSnapshot, 0, len(list))
	for i := range list {
		at := func(k ...any) []any { return append([]any{"status", "history", i}, k...) }
		s := ksSnapshot{digest: r.str(at("digest")...), status: r.str(at("lastReconciledStatus")...), revision: r.str(at("metadata", "revision")...)}
		var ok bool
		if s.first, ok = r.timestamp(at("firstReconciled")...); !ok || s.digest == "" {
			continue
		}
		s.last, _ = r.timestamp(at("lastReconciled")...)
		out = append(out, s)
	}
	return out
}

// readHelmReleaseHistory reads status.history; snapshots without a version
// are skipped.
func readHelmReleaseHistory(r *reader) []hrSnapshot {
	list := r.list("status", "history")
	out := make([]hrSnapshot, 0, len(list))
	for i := range list {
		at := func(k string) []any { return []any{"status", "history", i, k} }
		s := hrSnapshot{status: r.str(at("status")...), action: r.str(at("action")...), chartVersion: r.str(at("chartVersion")...), ociDigest: r.str(at("ociDigest")...)}
		var ok bool
		if s.version, ok = r.num(at("version")...); !ok {
			continue
		}
		// Helm copies the release's first install time into every
		// version's firstDeployed (helm.sh/helm/v4 pkg/action upgrade.go,
		// rollback.go); lastDeployed is when this version was deployed,
		// and is not changed when it is superseded.
		s.deployed, _ = r.timestamp(at("lastDeployed")...)
		out = append(out, s)
	}
	return out
}

// list reads a list of objects; a value of another type is a fault.
func (r *reader) list(path ...any) []any {
	v, ok := r.lookup(path)
	if !ok {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		r.wrongType(path, "list", v)
		return nil
	}
	return l
}

// sweepEvery is how often the tracker forgets deleted objects and sources.
const sweepEvery = time.Minute

// sweep forgets the objects and sources the caches no longer hold. An
// entry decoded within the last sweep period is kept: the informer
// transforms an object before its store holds it, so a fresh entry can be
// missing from the states a scrape read.
func (t *deliveryTracker) sweep(states []kube.KindState[*Record]) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.swept) < sweepEvery {
		return
	}
	t.swept = now
	live := map[objectKey]bool{}
	for _, ks := range states {
		for _, rec := range ks.Records {
			live[objectKey{ks.Kind.Kind, rec.Namespace, rec.Name}] = true
		}
	}
	for k, e := range t.objects {
		if !live[k] && now.Sub(e.lastDecoded) > sweepEvery {
			t.unwait(e)
			t.leave(e)
			delete(t.objects, k)
		}
	}
	for k, s := range t.sources {
		if !live[k] && now.Sub(s.seen) > sweepEvery {
			delete(t.sources, k)
		}
	}
}
