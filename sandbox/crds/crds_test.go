package crds

import (
	"bytes"
	"testing"
)

func TestFluxReturnsEveryEmbeddedCRD(t *testing.T) {
	files, err := Flux()
	if err != nil {
		t.Fatal(err)
	}
	// 6 source, 1 kustomize, 1 helm, 3 notification and 3 image kinds; PROVENANCE.md is not a manifest.
	if len(files) != 14 {
		t.Fatalf("Flux() returned %d files, want 14", len(files))
	}
	for i, f := range files {
		if !bytes.Contains(f, []byte("kind: CustomResourceDefinition")) {
			t.Errorf("file %d is not a CustomResourceDefinition manifest: %.80q", i, f)
		}
	}
}
