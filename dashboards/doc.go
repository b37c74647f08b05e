// Package dashboards holds flux_exporter's Grafana dashboards as plain JSON
// and the tests that keep them importable and consistent.
package dashboards

import "embed"

// Files holds the dashboard JSON files, for tests elsewhere (the end-to-end
// suite) that run every panel query against a real Prometheus.
//
//go:embed *.json
var Files embed.FS
