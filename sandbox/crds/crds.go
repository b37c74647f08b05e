// Package crds embeds the real Flux CustomResourceDefinitions (see
// flux/PROVENANCE.md) for tests and the sandbox to load into an API server.
package crds

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed flux/*.yaml
var flux embed.FS

// Flux returns each embedded Flux CRD file's bytes, ordered by file name.
func Flux() ([][]byte, error) {
	names, err := fs.Glob(flux, "flux/*.yaml")
	if err != nil {
		return nil, fmt.Errorf("list embedded Flux CRDs: %w", err)
	}
	out := make([][]byte, 0, len(names))
	for _, name := range names {
		b, err := flux.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read embedded %s: %w", name, err)
		}
		out = append(out, b)
	}
	return out, nil
}
