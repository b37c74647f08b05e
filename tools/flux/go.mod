module github.com/flux-exporter/flux_exporter/tools/flux

go 1.26.0

// The one place the flux CLI version is pinned. build.sh reads it with
// `go list -m` and builds ./cmd/flux from this module's hash-checked zip.
// There is no Go code here, so `go mod tidy` would drop this line: do not
// tidy this module; see README.md for how to bump it.
require github.com/fluxcd/flux2/v2 v2.9.5
