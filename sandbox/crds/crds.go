// Package crds embeds CustomResourceDefinitions for tests and the sandbox to
// load into an API server: the real Flux CRDs (see flux/PROVENANCE.md) and
// FluxInstance, ResourceSet and FluxReport CRDs of the Flux Operator's group
// that this project wrote for its tests (see operator/PROVENANCE.md).
package crds

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed flux/*.yaml operator/*.yaml
var files embed.FS

// Flux returns the bytes of each embedded Flux CRD file, ordered by file
// name, then of each Flux Operator CRD file: every Flux kind the sandbox
// serves, for the harness to install and for tests that list them all.
func Flux() ([][]byte, error) {
	toolkit, err := read("flux/*.yaml")
	if err != nil {
		return nil, err
	}
	operator, err := Operator()
	if err != nil {
		return nil, err
	}
	return append(toolkit, operator...), nil
}

// Operator returns only the Flux Operator CRD files (our FluxInstance,
// FluxReport and ResourceSet), by file name.
func Operator() ([][]byte, error) { return read("operator/*.yaml") }

func read(pattern string) ([][]byte, error) {
	names, err := fs.Glob(files, pattern)
	if err != nil {
		return nil, fmt.Errorf("list embedded CRDs %s: %w", pattern, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no embedded CRDs match %s", pattern)
	}
	out := make([][]byte, 0, len(names))
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read embedded %s: %w", name, err)
		}
		out = append(out, b)
	}
	return out, nil
}
