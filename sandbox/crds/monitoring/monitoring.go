// Package monitoring embeds the Prometheus Operator's ServiceMonitor and
// PrometheusRule CRDs (see PROVENANCE.md), so install tests can apply the
// objects flux_exporter ships to an API server that knows those kinds.
package monitoring

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed *.yaml
var files embed.FS

// CRDs returns each embedded CRD file's bytes, ordered by file name.
func CRDs() ([][]byte, error) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, fmt.Errorf("list embedded Prometheus Operator CRDs: %w", err)
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
