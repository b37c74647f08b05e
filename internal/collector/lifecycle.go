package collector

// What an object's failure, deadline and deletion look like over time, read
// from what the controllers record so that it survives their retries and
// the exporter's restarts (docs/flux-semantics.md, rules 12 to 14).

import (
	"hash/fnv"
	"math"
)

var (
	notReadySinceFamily = perObject("resource_not_ready_since_timestamp_seconds",
		"While a Flux object is not Ready, when it stopped being Ready, in Unix seconds: the earliest lastTransitionTime of Ready (not True), Reconciling and Stalled (True) and the source failure conditions (FetchFailed, BuildFailed, StorageOperationFailed, IncludeUnavailable True; SourceVerified False), or a Kustomization's failed history entry's firstReconciled, kept across updates of the same object. The controllers write Ready=Unknown at the start of a retry and change Reconciling's reason, which moves both conditions' lastTransitionTime at every attempt, so this, not Ready's transition, is how long an object has been failing. Absent while the object is Ready, and for an object never reconciled, which nothing dates.")
	timeoutFamily = perObject("resource_timeout_seconds",
		"The longest one reconcile attempt may take before the controller fails it, in seconds: a Kustomization's spec.timeout (default spec.interval less 30s, at least 30s), the largest of a HelmRelease's spec.timeout (default 5m), install, upgrade, test, rollback and uninstall timeouts. Ready=Unknown within it is progress, not failure.")
	deletionFamily = perObject("resource_deletion_timestamp_seconds",
		"When the object's deletion was requested (metadata.deletionTimestamp), in Unix seconds; absent unless it is being deleted. An object stays until its controller removes its finalizers, which kustomize-controller and helm-controller do only after pruning or uninstalling.")
	finalizerFamily = perObject("resource_finalizer_info",
		"A finalizer (metadata.finalizers) holding a Flux object that is being deleted, one series per finalizer; absent unless deletion was requested. Value is always 1.",
		"finalizer")
)

// failureAnchors are the condition types whose lastTransitionTime marks
// the start of a failure that is still going on, with the status that
// means failing. fluxcd/pkg runtime/conditions Set keeps a condition's
// lastTransitionTime only while its status, reason and message all stay
// the same: Ready's is moved by every retry's Ready=Unknown step and
// Reconciling's by its reason turning Progressing and back to
// ProgressingWithRetry, so they date only the latest attempt; a source's
// failure conditions keep theirs while the same error repeats, and so date
// the failure. None of them is older than the failure it belongs to, so
// the earliest is the best date the object shows. Conditions that may
// outlive a recovery, such as HelmRelease TestSuccess under
// test.ignoreFailures or Remediated, are left out: a stale one would date a
// new failure too early.
var failureAnchors = map[string]string{
	"Ready":                  "", // any status but True
	"Reconciling":            "True",
	"Stalled":                "True",
	"FetchFailed":            "True",
	"BuildFailed":            "True",
	"StorageOperationFailed": "True",
	"IncludeUnavailable":     "True",
	"SourceVerified":         "False",
}

// notReadySince is when an object that is not Ready stopped being Ready
// (notReadySinceFamily); ok is false when it is Ready or nothing dates it.
// history is a Kustomization's newest status.history entry's
// firstReconciled when that entry records a failure: fluxcd/pkg
// apis/meta History.Upsert keeps firstReconciled while the same digest
// keeps failing with the same status, which no condition does for
// kustomize-controller (it rewrites Ready and Reconciling on every
// attempt, kustomization_controller.go reconcile). prev is the previous
// record's start of the same failure. NaN stands for none of either.
func notReadySince(ready string, conds []condition, history, prev float64) (since float64, ok bool) {
	if ready == "True" {
		return 0, false
	}
	since = math.Inf(+1)
	for _, v := range []float64{history, prev} {
		if v < since { // false for NaN
			since = v
		}
	}
	for _, c := range conds {
		want, anchor := failureAnchors[c.typ]
		if !anchor || !c.hasTransition {
			continue
		}
		failing := c.status == want || (want == "" && c.status != "True")
		if failing && c.lastTransition < since {
			since = c.lastTransition
		}
	}
	return since, !math.IsInf(since, +1)
}

// timeoutSpec is where a kind keeps its reconcile deadline: the largest of
// paths that the object sets, else the field at defPath less defLess
// seconds but at least floor, else def seconds.
type timeoutSpec struct {
	paths          []string
	defPath        string
	defLess, floor float64
	def            float64
}

// timeout reads the object's reconcile deadline; ok is false for a kind
// without one.
func (r *reader) timeout(s timeoutSpec) (float64, bool) {
	if len(s.paths) == 0 {
		return 0, false
	}
	best, found := 0.0, false
	for _, p := range s.paths {
		if v, ok := r.duration(pathOf(p)...); ok && (!found || v > best) {
			best, found = v, true
		}
	}
	if found {
		return best, true
	}
	if s.defPath != "" {
		if v, ok := r.duration(pathOf(s.defPath)...); ok {
			return max(v-s.defLess, s.floor), true
		}
	}
	return s.def, s.def > 0
}

// previousRecord is prev as a record of the object with this uid hash, or
// nil: a record of another object of the same name (deleted and created
// again) has nothing to carry over.
func previousRecord(prev *Record, uid uint64) *Record {
	if prev == nil || prev.uid != uid {
		return nil
	}
	return prev
}

// hashUID is what a record keeps of metadata.uid: enough to tell two
// objects of one name apart, in 8 bytes instead of 36.
func hashUID(uid string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(uid))
	return h.Sum64()
}

// failedHistoryStart is a Kustomization's newest history entry's
// firstReconciled when that entry is a failure, else NaN.
func (r *reader) failedHistoryStart() float64 {
	status := r.str("status", "history", 0, "lastReconciledStatus")
	if status == "" || status == "ReconciliationSucceeded" {
		return math.NaN()
	}
	if v, ok := r.timestamp("status", "history", 0, "firstReconciled"); ok {
		return v
	}
	return math.NaN()
}

// addLifecycle renders the failure, deadline and deletion series. prev is
// the object's previous record, or nil.
func (w *recordWriter) addLifecycle(spec *kindSpec, ready string, conds []condition, prev *Record) {
	carried := math.NaN()
	if prev != nil && prev.notReady {
		carried = prev.notReadySince
	}
	if since, ok := notReadySince(ready, conds, w.r.failedHistoryStart(), carried); ok {
		w.rec.notReadySince, w.rec.notReady = since, true
		w.add(notReadySinceFamily, since)
	}
	if t, ok := w.r.timeout(spec.timeout); ok {
		w.add(timeoutFamily, t)
	}
	deleted, ok := w.r.timestamp("metadata", "deletionTimestamp")
	if !ok {
		return
	}
	w.add(deletionFamily, deleted)
	if v, ok := w.r.lookup([]any{"metadata", "finalizers"}); ok {
		list, _ := v.([]any)
		seen := make(map[string]bool, len(list))
		for i, f := range list {
			name, ok := f.(string)
			if !ok {
				w.r.wrongType([]any{"metadata", "finalizers", i}, "string", f)
				continue
			}
			if !seen[name] { // two series of one label set would make the scrape invalid
				seen[name] = true
				w.add(finalizerFamily, 1, name)
			}
		}
	}
}
