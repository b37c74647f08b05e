package crds

import (
	"bytes"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

func TestFluxReturnsEveryEmbeddedCRD(t *testing.T) {
	files, err := Flux()
	if err != nil {
		t.Fatal(err)
	}
	// 6 source, 1 kustomize, 1 helm, 3 notification and 3 image kinds, and
	// the operator's FluxInstance, ResourceSet and FluxReport; PROVENANCE.md
	// is not a manifest.
	if len(files) != 17 {
		t.Fatalf("Flux() returned %d files, want 17", len(files))
	}
	for i, f := range files {
		if !bytes.Contains(f, []byte("kind: CustomResourceDefinition")) {
			t.Errorf("file %d is not a CustomResourceDefinition manifest: %.80q", i, f)
		}
	}
}

// TestOperatorCRD checks the shape the tests rely on: FluxInstance,
// FluxReport and ResourceSet of fluxcd.controlplane.io, namespaced, v1
// served and stored, a status subresource, and the documented fields the
// exporter reads. The API server checks the rest (structural schema) when
// the harness installs them.
func TestOperatorCRD(t *testing.T) {
	files, err := Operator()
	if err != nil {
		t.Fatal(err)
	}
	// By file name: fluxinstances, fluxreports, resourcesets.
	want := []struct {
		kind, name string
		fields     map[string][]string // spec or status → fields
	}{
		{"FluxInstance", "fluxinstances.fluxcd.controlplane.io", map[string][]string{
			"spec":   {"distribution", "components", "cluster", "sync"},
			"status": {"conditions", "lastAppliedRevision", "lastAttemptedRevision", "components", "inventory"}}},
		{"FluxReport", "fluxreports.fluxcd.controlplane.io", map[string][]string{
			"spec":   {"distribution", "components", "cluster", "operator", "reconcilers", "sync"},
			"status": {"conditions"}}},
		{"ResourceSet", "resourcesets.fluxcd.controlplane.io", map[string][]string{
			"spec":   {"inputs", "resources", "resourcesTemplate", "dependsOn"},
			"status": {"conditions", "history", "inventory"}}},
	}
	if len(files) != len(want) {
		t.Fatalf("Operator() returned %d files, want %d", len(files), len(want))
	}
	for i, w := range want {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(files[i], &crd); err != nil {
			t.Fatal(err)
		}
		if crd.Name != w.name || crd.Spec.Group != "fluxcd.controlplane.io" ||
			crd.Spec.Names.Kind != w.kind || crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
			t.Errorf("CRD %s: group %s, kind %s, scope %s; want %s, kind %s, namespaced", crd.Name, crd.Spec.Group, crd.Spec.Names.Kind, crd.Spec.Scope, w.name, w.kind)
		}
		if len(crd.Spec.Versions) != 1 {
			t.Fatalf("%s: %d versions, want v1 only", crd.Name, len(crd.Spec.Versions))
		}
		v := crd.Spec.Versions[0]
		if v.Name != "v1" || !v.Served || !v.Storage || v.Subresources == nil || v.Subresources.Status == nil {
			t.Errorf("%s: version %s served=%v storage=%v subresources=%+v; want v1, served, stored, with status", crd.Name, v.Name, v.Served, v.Storage, v.Subresources)
		}
		for part, fields := range w.fields {
			props := v.Schema.OpenAPIV3Schema.Properties[part]
			for _, f := range fields {
				if _, ok := props.Properties[f]; !ok {
					t.Errorf("%s: %s lacks %s", crd.Name, part, f)
				}
			}
		}
	}
}
