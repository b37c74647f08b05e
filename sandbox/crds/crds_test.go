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
	// the operator's FluxInstance; PROVENANCE.md is not a manifest.
	if len(files) != 15 {
		t.Fatalf("Flux() returned %d files, want 15", len(files))
	}
	for i, f := range files {
		if !bytes.Contains(f, []byte("kind: CustomResourceDefinition")) {
			t.Errorf("file %d is not a CustomResourceDefinition manifest: %.80q", i, f)
		}
	}
}

// TestOperatorCRD checks the shape the tests rely on: FluxInstance of
// fluxcd.controlplane.io, namespaced, v1 served and stored, a status
// subresource, and the documented status fields. The API server checks the
// rest (structural schema) when the harness installs it.
func TestOperatorCRD(t *testing.T) {
	files, err := Operator()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("Operator() returned %d files, want 1", len(files))
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(files[0], &crd); err != nil {
		t.Fatal(err)
	}
	if crd.Name != "fluxinstances.fluxcd.controlplane.io" || crd.Spec.Group != "fluxcd.controlplane.io" ||
		crd.Spec.Names.Kind != "FluxInstance" || crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
		t.Errorf("CRD %s: group %s, kind %s, scope %s", crd.Name, crd.Spec.Group, crd.Spec.Names.Kind, crd.Spec.Scope)
	}
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("%d versions, want v1 only", len(crd.Spec.Versions))
	}
	v := crd.Spec.Versions[0]
	if v.Name != "v1" || !v.Served || !v.Storage || v.Subresources == nil || v.Subresources.Status == nil {
		t.Errorf("version %s served=%v storage=%v subresources=%+v; want v1, served, stored, with status", v.Name, v.Served, v.Storage, v.Subresources)
	}
	status := v.Schema.OpenAPIV3Schema.Properties["status"]
	for _, f := range []string{"conditions", "lastAppliedRevision", "lastAttemptedRevision", "components", "inventory"} {
		if _, ok := status.Properties[f]; !ok {
			t.Errorf("status lacks %s", f)
		}
	}
}
