module github.com/flux-exporter/flux_exporter/tools/flux-controllers

go 1.26.0

require (
	github.com/fluxcd/helm-controller v1.6.2
	github.com/fluxcd/kustomize-controller v1.9.4
	github.com/fluxcd/notification-controller v1.9.3
	github.com/fluxcd/source-controller v1.9.1
)
