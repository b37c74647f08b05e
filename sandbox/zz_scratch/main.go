package main

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

func main() {
	f, _ := fleet.Generate(fleet.Options{Seed: 4, Objects: 150, Namespaces: 4})
	fmt.Print(f.Summary().String())
	for _, o := range f.Objects {
		u := o.Object
		hist, _, _ := unstructured.NestedSlice(u.Object, "status", "history")
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		fl, _, _ := unstructured.NestedInt64(u.Object, "status", "failures")
		var cs []string
		for _, c := range conds {
			m := c.(map[string]any)
			cs = append(cs, fmt.Sprintf("%s=%s/%s", m["type"], m["status"], m["reason"]))
		}
		act := ""
		if len(hist) > 0 {
			act = fmt.Sprint(hist[0].(map[string]any)["action"], hist[0].(map[string]any)["version"])
		}
		src, _, _ := unstructured.NestedStringMap(u.Object, "spec", "sourceRef")
		br, _, _ := unstructured.NestedString(u.Object, "spec", "ref", "branch")
		if o.State != fleet.StateReady || o.Kind == "HelmRelease" || o.Kind == "ImageRepository" || o.Suspended || (o.Kind == "Kustomization" && len(hist) > 0 && src["kind"] == "GitRepository") || o.Kind == "GitRepository" {
			fmt.Printf("%-22s %-12s %-28s %-12s susp=%v gen=%d og=%d fail=%d hist=%d %s src=%v br=%s %v\n", o.Kind, o.Namespace(), o.Name(), o.State, o.Suspended, o.Generation, og, fl, len(hist), act, src, br, cs)
		}
	}
}
