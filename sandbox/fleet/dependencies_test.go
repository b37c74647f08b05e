package fleet

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestDependencyStates: every fleet big enough holds the dependency shapes
// whatever its seed, with the reasons the controllers write for them.
func TestDependencyStates(t *testing.T) {
	for seed := int64(0); seed < 10; seed++ {
		for _, nss := range []int{1, 3} {
			f := mustGenerate(t, Options{Seed: seed, Objects: 60, Namespaces: nss})
			ns, other := f.Namespaces[0], f.Namespaces[1%nss]
			byRef := map[objRef]*Object{}
			for _, o := range f.Objects {
				byRef[refOf(o)] = o
			}
			reason := func(kind, ns, name, want string) *Object {
				t.Helper()
				o := byRef[objRef{kind, ns, name}]
				if o == nil {
					t.Fatalf("seed %d, %d namespaces: no %s %s/%s", seed, nss, kind, ns, name)
				}
				if got := plannedCond(o, "Ready"); got["status"] != "False" || got["reason"] != want || o.Suspended {
					t.Errorf("seed %d: %s is Ready %v/%v (suspended %v), want False/%s", seed, refOf(o), got["status"], got["reason"], o.Suspended, want)
				}
				return o
			}
			for _, name := range []string{platformSource, platformCharts} {
				src := reason(KindOCIRepository, ns, name, "OCIArtifactPullFailed")
				if _, ok := src.Status()["artifact"]; ok || plannedCond(src, "ArtifactInStorage") != nil {
					t.Errorf("seed %d: %s has an artifact", seed, refOf(src))
				}
			}
			reason(KindKustomization, ns, platformCRDs, "ArtifactFailed")
			apps := reason(KindKustomization, other, platformApps, "ArtifactFailed")
			reason(KindHelmRelease, ns, platformDB, "SourceNotReady")
			api := reason(KindHelmRelease, other, platformAPI, "DependencyNotReady")
			if srcNS, _, _ := unstructured.NestedString(apps.Object.Object, "spec", "sourceRef", "namespace"); (ns != other) != (srcNS == ns) {
				t.Errorf("seed %d: %s sourceRef namespace %q, want it only across namespaces", seed, refOf(apps), srcNS)
			}
			deps, _, _ := unstructured.NestedSlice(api.Object.Object, "spec", "dependsOn")
			if len(deps) != 2 || api.dangling != (objRef{KindHelmRelease, other, platformCache}) || byRef[api.dangling] != nil {
				t.Errorf("seed %d: %s dependsOn %v, dangling %v", seed, refOf(api), deps, api.dangling)
			}
		}
	}
}
