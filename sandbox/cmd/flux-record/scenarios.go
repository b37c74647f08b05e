package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/sandbox/recorded"
)

// scenario is a script of actions against the real controllers. Its
// name is the fixture's file name and, with "tl-" before it, the
// namespace it runs in, which the replay uses too, so that references the
// controllers write (a HelmRelease's status.helmChart) stay true.
type scenario struct {
	name string
	why  string
	play func(ctx context.Context, r *scene) error
}

// scene is one scenario being played.
type scene struct {
	w  *world
	ns string
	tp *tape
}

// fleetFiles is the Git repository's content at a good commit: a
// ConfigMap under ./apps and one under ./infra.
func fleetFiles() map[string]string {
	return map[string]string{
		"apps/web.yaml":   "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  color: blue\n",
		"infra/base.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: base\ndata:\n  tier: infra\n",
	}
}

// badFleetFiles adds a kustomization.yaml under ./apps that lists a file
// the commit does not have: kustomize build fails on it.
func badFleetFiles() map[string]string {
	f := fleetFiles()
	f["apps/kustomization.yaml"] = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- web.yaml\n- missing.yaml\n"
	return f
}

var scenarios = []scenario{
	{name: "recorded-kustomization-bad-commit", why: kustomizationBadCommitWhy, play: kustomizationBadCommit},
	{name: "recorded-kustomization-missing-dependency", why: missingDependencyWhy, play: missingDependency},
	{name: "recorded-helm-upgrade-rollback-stalled", why: rollbackStalledWhy, play: rollbackStalled},
	{name: "recorded-helm-counters-outlive-failure", why: countersOutliveWhy, play: countersOutlive},
	{name: "recorded-helm-retry-on-failure", why: retryOnFailureWhy, play: retryOnFailure},
	{name: "recorded-helm-chart-version-missing", why: chartMissingWhy, play: chartMissing},
}

// play runs s in a fresh namespace and returns what the controllers wrote.
func (w *world) play(ctx context.Context, s scenario) (*recorded.Fixture, error) {
	ns := "tl-" + s.name
	if err := w.namespace(ctx, ns); err != nil {
		return nil, err
	}
	tp := &tape{start: time.Now(), last: map[string]map[string]any{}}
	wctx, stopWatch := context.WithCancel(ctx)
	wg, err := w.follow(wctx, ns, tp)
	if err != nil {
		stopWatch()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err = s.play(ctx, &scene{w: w, ns: ns, tp: tp})
	time.Sleep(500 * time.Millisecond) // let the watches deliver the last writes
	stopWatch()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	f := tp.fix
	f.Scenario, f.Why, f.Start = s.name, s.why, tp.start.UTC()
	f.Controllers, f.Flags = map[string]string{}, map[string][]string{}
	for _, c := range w.controllers {
		f.Controllers[c.name] = c.version
		f.Flags[c.name] = c.flags
	}
	return &f, nil
}

// apply creates or updates the object written in YAML (server-side apply
// by "flux-record"), in the scenario's namespace.
func (r *scene) apply(ctx context.Context, doc string) error {
	u := &unstructured.Unstructured{}
	if err := yaml.UnmarshalStrict([]byte(doc), &u.Object); err != nil {
		return fmt.Errorf("scenario object: %w\n%s", err, doc)
	}
	gvr, ok := recordedKinds[u.GetKind()]
	if !ok {
		return fmt.Errorf("scenario object of kind %q: not a recorded kind", u.GetKind())
	}
	u.SetNamespace(r.ns)
	b, err := u.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode %s: %w", u.GetName(), err)
	}
	force := true
	_, err = r.w.dyn.Resource(gvr).Namespace(r.ns).Patch(ctx, u.GetName(), types.ApplyPatchType, b,
		metav1.PatchOptions{FieldManager: "flux-record", Force: &force})
	if err != nil {
		return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// commit pushes files to the Git repository and asks source-controller to
// fetch at once (reconcile.fluxcd.io/requestedAt, as flux reconcile does).
func (r *scene) commit(ctx context.Context, repo, message string, files map[string]string) (string, error) {
	rev, err := r.w.git.commit(ctx, message, files)
	if err != nil {
		return "", err
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":%q}}}`, time.Now().Format(time.RFC3339Nano))
	_, err = r.w.dyn.Resource(recordedKinds["GitRepository"]).Namespace(r.ns).Patch(ctx, repo, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: "flux-record"})
	switch {
	case apierrors.IsNotFound(err):
		r.tp.act("commit %s (%s)", rev, message)
	case err != nil:
		return "", fmt.Errorf("request reconcile of %s: %w", repo, err)
	default:
		r.tp.act("commit %s (%s) and request a reconcile of GitRepository %s", rev, message, repo)
	}
	return rev, nil
}

// await polls kind/name until ok holds, for at most limit.
func (r *scene) await(ctx context.Context, kind, name string, limit time.Duration, what string, ok func(*unstructured.Unstructured) bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last *unstructured.Unstructured
	for {
		u, err := r.w.dyn.Resource(recordedKinds[kind]).Namespace(r.ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = u
			if ok(u) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s: %s not seen within %s; last conditions: %s", kind, name, what, limit, conditionsOf(last))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hold lets the controllers run for d: retries and back-off unfold.
func (r *scene) hold(ctx context.Context, d time.Duration) error {
	r.tp.act("wait %s", d)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// condition reports a condition's status and reason ("" when absent).
func condition(u *unstructured.Unstructured, typ string) (status, reason string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			s, _ := m["status"].(string)
			rsn, _ := m["reason"].(string)
			return s, rsn
		}
	}
	return "", ""
}

// is holds once condition typ has status and, unless empty, reason.
func is(typ, status, reason string) func(*unstructured.Unstructured) bool {
	return func(u *unstructured.Unstructured) bool {
		s, rsn := condition(u, typ)
		return s == status && (reason == "" || rsn == reason)
	}
}

// readyAt holds once Ready=True for the object's generation and field
// (lastAppliedRevision, lastAttemptedRevision) equals want.
func readyAt(field, want string) func(*unstructured.Unstructured) bool {
	return func(u *unstructured.Unstructured) bool {
		got, _, _ := unstructured.NestedString(u.Object, "status", field)
		og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		return is("Ready", "True", "")(u) && og == u.GetGeneration() && (want == "" || got == want)
	}
}

func conditionsOf(u *unstructured.Unstructured) string {
	if u == nil {
		return "(object not found)"
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var out []string
	for _, c := range conds {
		m, _ := c.(map[string]any)
		out = append(out, fmt.Sprintf("%v=%v %v %q", m["type"], m["status"], m["reason"], m["message"]))
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}
