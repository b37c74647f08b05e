// Package alerts holds flux_exporter's Prometheus alerting rules
// (flux-exporter.rules.yaml), their promtool unit tests and the tests that
// keep every alert tied to a runbook.
package alerts

import "embed"

// Rules holds the rule files, for tests elsewhere (the end-to-end suite)
// that load them into a real Prometheus.
//
//go:embed *.rules.yaml
var Rules embed.FS
