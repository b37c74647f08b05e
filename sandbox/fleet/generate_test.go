package fleet

import (
	"encoding/json"
	"fmt"
	"regexp"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func mustGenerate(t *testing.T, opts Options) *Fleet {
	t.Helper()
	f, err := Generate(opts)
	if err != nil {
		t.Fatalf("Generate(%+v): %v", opts, err)
	}
	return f
}

func fleetJSON(t *testing.T, f *Fleet) string {
	t.Helper()
	var objs []map[string]any
	for _, o := range f.Objects {
		objs = append(objs, o.Object.Object)
	}
	b, err := json.Marshal(objs)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestGenerateIsDeterministic(t *testing.T) {
	opts := Options{Seed: 42, Objects: 500, Namespaces: 6}
	a, b := mustGenerate(t, opts), mustGenerate(t, opts)
	if fleetJSON(t, a) != fleetJSON(t, b) {
		t.Fatal("the same options generated different fleets")
	}
	for i := range a.Objects {
		if a.Objects[i].State != b.Objects[i].State || a.Objects[i].Generation != b.Objects[i].Generation {
			t.Fatalf("object %d: plans differ", i)
		}
	}
	other := mustGenerate(t, Options{Seed: 43, Objects: 500, Namespaces: 6})
	if fleetJSON(t, a) == fleetJSON(t, other) {
		t.Fatal("seeds 42 and 43 generated the same fleet")
	}
	later := mustGenerate(t, Options{Seed: 42, Objects: 500, Namespaces: 6, Now: DefaultNow.Add(time.Hour)})
	if fleetJSON(t, a) == fleetJSON(t, later) {
		t.Fatal("a later Now left every timestamp unchanged")
	}
}

func TestGenerateRejectsEmptyFleets(t *testing.T) {
	for _, opts := range []Options{{Objects: 0, Namespaces: 1}, {Objects: 10, Namespaces: 0}} {
		if _, err := Generate(opts); err == nil {
			t.Errorf("Generate(%+v) succeeded, want an error", opts)
		}
	}
}

func kindsOf(f *Fleet) map[string]int {
	m := map[string]int{}
	for _, o := range f.Objects {
		m[o.Kind]++
	}
	return m
}

func TestGenerateExactSizeAndCoverage(t *testing.T) {
	for seed := int64(0); seed < 25; seed++ {
		for ns := 1; ns <= 6; ns++ {
			for _, n := range []int{1, 7, MinObjectsForAllKinds, 60} {
				f := mustGenerate(t, Options{Seed: seed, Objects: n, Namespaces: ns})
				if len(f.Objects) != n {
					t.Fatalf("seed %d, %d namespaces: %d objects, want %d", seed, ns, len(f.Objects), n)
				}
				if n < MinObjectsForAllKinds {
					continue
				}
				kinds := kindsOf(f)
				for _, gk := range Kinds {
					if kinds[gk.Kind] == 0 {
						t.Errorf("seed %d, %d namespaces, %d objects: no %s", seed, ns, n, gk.Kind)
					}
				}
			}
		}
	}
}

// TestGenerateShape checks what the controllers' statuses must look like and
// that every reference points at an object of the fleet.
func TestGenerateShape(t *testing.T) {
	f := mustGenerate(t, Options{Seed: 7, Objects: 1000, Namespaces: 8})
	byRef := map[objRef]*Object{}
	usedNS := map[string]bool{}
	for _, o := range f.Objects {
		if byRef[refOf(o)] != nil {
			t.Fatalf("duplicate %s", refOf(o))
		}
		byRef[refOf(o)] = o
		usedNS[o.Namespace()] = true
	}
	if len(usedNS) != len(f.Namespaces) {
		t.Errorf("objects in %d namespaces, want %d", len(usedNS), len(f.Namespaces))
	}
	s := f.Summary()
	for _, st := range []State{StateReady, StateFailing, StateProgressing, StateStalled, StateUnreconciled, StateNoStatus} {
		if s.States[st] == 0 {
			t.Errorf("no object in state %s", st)
		}
	}
	drifting := 0
	for _, o := range f.Objects {
		if o.Kind == KindHelmRelease && o.State == StateProgressing && findPlannedCond(o, "Ready")["message"] == "correcting cluster drift" {
			drifting++
		}
	}
	if drifting == 0 {
		t.Error("no HelmRelease is correcting drift")
	}
	reasons := map[string]bool{}
	for _, o := range f.Objects {
		conds, _, _ := unstructured.NestedSlice(o.Object.Object, "status", "conditions")
		for _, c := range conds {
			reasons[c.(map[string]any)["reason"].(string)] = true
		}
	}
	for _, r := range []string{
		"ReconciliationSucceeded", "BuildFailed", "HealthCheckFailed", "DependencyNotReady", "ArtifactFailed",
		"GitOperationFailed", "InstallSucceeded", "UpgradeSucceeded", "InstallFailed", "UpgradeFailed",
		"RollbackSucceeded", "RetriesExceeded", "Progressing", "Succeeded", "ChartPullSucceeded", "URLInvalid",
		"SourceNotReady", "ProgressingWithRetry", "UninstallSucceeded",
	} {
		if !reasons[r] {
			t.Errorf("no condition has reason %s", r)
		}
	}
	if s.Total.Suspended == 0 || s.Total.Stalled == 0 || s.Total.ReadyFalse == 0 || s.Total.ReadyUnknown == 0 {
		t.Errorf("summary lacks variety: %+v", s.Total)
	}

	revisions := map[string]*regexp.Regexp{
		KindGitRepository:    regexp.MustCompile(`^[\w.-]+@sha1:[0-9a-f]{40}$`),
		KindOCIRepository:    regexp.MustCompile(`^[\w.-]+@sha256:[0-9a-f]{64}$`),
		KindHelmRepository:   regexp.MustCompile(`^sha256:[0-9a-f]{64}$`),
		KindBucket:           regexp.MustCompile(`^sha256:[0-9a-f]{64}$`),
		KindHelmChart:        regexp.MustCompile(`^v?\d+\.\d+\.\d+$`),
		KindExternalArtifact: regexp.MustCompile(`^latest@sha256:[0-9a-f]{64}$`),
	}
	exists := func(o *Object, kind, ns, name string) {
		t.Helper()
		if ns == "" {
			ns = o.Namespace()
		}
		if byRef[objRef{kind, ns, name}] == nil {
			t.Errorf("%s references missing %s %s/%s", refOf(o), kind, ns, name)
		}
	}
	str := func(o *Object, path ...string) string {
		s, _, _ := unstructured.NestedString(o.Object.Object, path...)
		return s
	}
	// Every dependsOn entry names an object of the fleet, but the one the
	// fleet leaves out on purpose, which must be absent.
	dangling := 0
	dependsOn := func(o *Object, kind string) {
		t.Helper()
		deps, _, _ := unstructured.NestedSlice(o.Object.Object, "spec", "dependsOn")
		for _, d := range deps {
			m := d.(map[string]any)
			ns, _ := m["namespace"].(string)
			if ns == "" {
				ns = o.Namespace()
			}
			r := objRef{kind, ns, m["name"].(string)}
			if r != o.dangling {
				exists(o, kind, ns, r.name)
				continue
			}
			dangling++
			if byRef[r] != nil {
				t.Errorf("%s depends on %s, which should not exist", refOf(o), r)
			}
		}
	}
	for _, o := range f.Objects {
		status := o.Status()
		switch o.State {
		case StateUnreconciled, StateNoStatus:
			if status != nil {
				t.Errorf("%s is %s but has a status", refOf(o), o.State)
			}
		default:
			if status == nil {
				t.Fatalf("%s is %s but has no status", refOf(o), o.State)
			}
			wantReady := map[State]string{StateReady: "True", StateFailing: "False", StateProgressing: "Unknown", StateStalled: "False"}[o.State]
			if got := conditionStatus(o.Object.Object, "Ready"); got != wantReady {
				t.Errorf("%s is %s but Ready=%q", refOf(o), o.State, got)
			}
			if (o.State == StateStalled) != (conditionStatus(o.Object.Object, "Stalled") == "True") {
				t.Errorf("%s is %s; Stalled=%q", refOf(o), o.State, conditionStatus(o.Object.Object, "Stalled"))
			}
			if og, ok := status["observedGeneration"].(int64); ok && o.Kind != KindExternalArtifact {
				checkGenerations(t, o, og)
			}
		}
		if s, _, _ := unstructured.NestedBool(o.Object.Object, "spec", "suspend"); s != o.Suspended {
			t.Errorf("%s: spec.suspend %v, planned %v", refOf(o), s, o.Suspended)
		}
		if re := revisions[o.Kind]; re != nil && status != nil && status["artifact"] != nil {
			rev := str(o, "status", "artifact", "revision")
			if !re.MatchString(rev) {
				t.Errorf("%s: artifact revision %q does not match %s", refOf(o), rev, re)
			}
			if d := str(o, "status", "artifact", "digest"); !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(d) {
				t.Errorf("%s: artifact digest %q", refOf(o), d)
			}
		}

		switch o.Kind {
		case KindKustomization:
			srcNS := str(o, "spec", "sourceRef", "namespace")
			if srcNS == "" {
				srcNS = o.Namespace()
			}
			src := byRef[objRef{str(o, "spec", "sourceRef", "kind"), srcNS, str(o, "spec", "sourceRef", "name")}]
			exists(o, str(o, "spec", "sourceRef", "kind"), srcNS, str(o, "spec", "sourceRef", "name"))
			dependsOn(o, KindKustomization)
			if o.State == StateReady && src != nil {
				if got, want := str(o, "status", "lastAppliedRevision"), str(src, "status", "artifact", "revision"); got != want {
					t.Errorf("%s applied %q, its source has %q", refOf(o), got, want)
				}
				if n, _, _ := unstructured.NestedSlice(o.Object.Object, "status", "inventory", "entries"); len(n) == 0 {
					t.Errorf("%s is ready without an inventory", refOf(o))
				}
				if h, _, _ := unstructured.NestedSlice(o.Object.Object, "status", "history"); len(h) == 0 {
					t.Errorf("%s is ready without history", refOf(o))
				}
			}
		case KindHelmRelease:
			dependsOn(o, KindHelmRelease)
			if name := str(o, "spec", "chartRef", "name"); name != "" {
				exists(o, str(o, "spec", "chartRef", "kind"), str(o, "spec", "chartRef", "namespace"), name)
			} else {
				exists(o, KindHelmRepository, "", str(o, "spec", "chart", "spec", "sourceRef", "name"))
				if hc := str(o, "status", "helmChart"); hc != "" {
					exists(o, KindHelmChart, "", hc[len(o.Namespace())+1:])
				}
			}
			if o.State == StateReady {
				h, _, _ := unstructured.NestedSlice(o.Object.Object, "status", "history")
				if len(h) == 0 || h[0].(map[string]any)["status"] != "deployed" || h[0].(map[string]any)["chartName"] == "" {
					t.Errorf("%s is ready; history[0] = %v", refOf(o), h)
				}
			}
		case KindHelmChart:
			exists(o, KindHelmRepository, "", str(o, "spec", "sourceRef", "name"))
		case KindImagePolicy:
			exists(o, KindImageRepository, "", str(o, "spec", "imageRepositoryRef", "name"))
			if o.State == StateReady && str(o, "status", "latestRef", "tag") == "" {
				t.Errorf("%s is ready without latestRef", refOf(o))
			}
		case KindImageUpdateAutomation:
			exists(o, KindGitRepository, "", str(o, "spec", "sourceRef", "name"))
		case KindAlert:
			exists(o, KindProvider, "", str(o, "spec", "providerRef", "name"))
		case KindReceiver:
			res, _, _ := unstructured.NestedSlice(o.Object.Object, "spec", "resources")
			exists(o, KindGitRepository, "", res[0].(map[string]any)["name"].(string))
			if o.State == StateReady && !regexp.MustCompile(`^/hook/[0-9a-f]{64}$`).MatchString(str(o, "status", "webhookPath")) {
				t.Errorf("%s: webhookPath %q", refOf(o), str(o, "status", "webhookPath"))
			}
		case KindImageRepository:
			if o.State == StateReady {
				if n, _, _ := unstructured.NestedInt64(o.Object.Object, "status", "lastScanResult", "tagCount"); n == 0 {
					t.Errorf("%s is ready without scanned tags", refOf(o))
				}
			}
		case KindHelmRepository:
			if str(o, "spec", "type") == "oci" && o.State != StateNoStatus {
				t.Errorf("%s is an OCI HelmRepository in state %s", refOf(o), o.State)
			}
		}
	}
	if dangling == 0 {
		t.Error("no dependsOn names an object that does not exist")
	}
	if t.Failed() {
		fmt.Println(s)
	}
}

func findPlannedCond(o *Object, typ string) map[string]any {
	conds, _, _ := unstructured.NestedSlice(o.Object.Object, "status", "conditions")
	for _, c := range conds {
		if m := c.(map[string]any); m["type"] == typ {
			return m
		}
	}
	return nil
}

// checkGenerations holds a planned object to docs/flux-semantics.md, rule 2:
// every attempt stamps Ready with the generation it acted on, and
// status.observedGeneration moves only when an attempt ends well; a suspended
// object's last spec change was skipped, except by source-controller.
func checkGenerations(t *testing.T, o *Object, observed int64) {
	t.Helper()
	readyGen, _ := findPlannedCond(o, "Ready")["observedGeneration"].(int64)
	fail := func(why string) {
		t.Errorf("%s (%s, suspended %v): generation %d, observed %d, Ready's %d: %s",
			refOf(o), o.State, o.Suspended, o.Generation, observed, readyGen, why)
	}
	switch {
	case observed > o.Generation || readyGen > o.Generation:
		fail("ahead of the object")
	case o.Suspended && o.Group == groupSource:
		if observed != o.Generation || readyGen != o.Generation {
			fail("source-controller rewrites Ready and observedGeneration of a suspended source")
		}
	case o.Suspended:
		if readyGen >= o.Generation {
			fail("a suspended object's Ready predates the suspension")
		}
	case readyGen != o.Generation:
		fail("every attempt stamps Ready with the generation it acted on")
	case o.State == StateReady && observed != o.Generation:
		fail("a reconcile that ended well moves observedGeneration")
	}
}
