# flux_exporter. `make demo` and `make test` are the README's quick start.
GO        ?= go
BIN       := $(CURDIR)/.bin
PROMTOOL  ?= promtool
export GOTOOLCHAIN := local

.PHONY: all build test check-tools test-unit test-e2e test-race-harness fuzz lint vet fmt checkrules checkmetrics \
        lint-dashboards bench bench-100k demo tools flux-controllers record-timelines clean deploy-generate image-binary

all: lint test build

## build: the flux_exporter binary through promu, with version information.
build: $(BIN)/promu
	$(BIN)/promu build --prefix $(CURDIR)

## test: everything CI runs: unit, fuzz seeds, harness under -race, end to end, rules, dashboards.
test: check-tools fmt vet test-unit fuzz checkrules lint-dashboards test-race-harness test-e2e

## check-tools: the programs the tests run that Go does not build.
check-tools:
	@command -v $(PROMTOOL) >/dev/null || { echo "promtool not found: apt-get install prometheus (Debian's package), or run .ci/run, which installs it"; exit 1; }
	@command -v prometheus >/dev/null || { echo "prometheus not found: apt-get install prometheus (Debian's package), or run .ci/run, which installs it"; exit 1; }
	@command -v kubectl >/dev/null || { echo "kubectl not found: install kubectl 1.32+, or run .ci/run, which builds it"; exit 1; }

test-unit:
	$(GO) test -race -count=1 ./...

## fuzz: a short seeded run of each fuzz target.
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=10s ./internal/events/
	$(GO) test -run='^$$' -fuzz=FuzzDecodeObject -fuzztime=10s ./internal/collector/

## test-race-harness: several API servers in parallel under the race detector.
test-race-harness:
	cd sandbox && $(GO) test -race -count=1 ./apiserver/

## test-e2e: the sandbox module: fleet, sandbox command and end-to-end tests against real API servers.
test-e2e: $(BIN)/helm $(BIN)/flux $(BIN)/notification-controller
	cd sandbox && PATH="$(BIN):$$PATH" $(GO) test -count=1 -timeout 30m ./...

vet:
	$(GO) vet ./...
	cd sandbox && $(GO) vet ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: fmt vet funclen checkrules lint-dashboards

## funclen: no function outside tests longer than 80 lines (funclen_test.go).
funclen:
	$(GO) test -run '^TestFunctionLength$$' -count=1 .

## checkrules: promtool check and unit-test the alert rules.
checkrules:
	$(PROMTOOL) check rules alerts/*.yaml
	$(PROMTOOL) test rules alerts/tests/*.yaml

## checkmetrics: promtool check metrics on the golden scrape of the sandbox fleet.
checkmetrics:
	$(PROMTOOL) check metrics < sandbox/e2e/testdata/fleet-scrape.prom

lint-dashboards: $(BIN)/dashboard-linter
	for d in dashboards/*.json; do $(BIN)/dashboard-linter lint --strict "$$d" || exit 1; done

## bench: flux_exporter and kube-state-metrics side by side over 10,000 Flux
## objects, full HTTP scrapes as Prometheus sends them; prints one table
## (docs/performance.md). Never fails on speed, only when a process cannot
## start or a scrape is incomplete.
bench: $(BIN)/kube-state-metrics
	cd sandbox && $(GO) run ./cmd/flux-bench --objects=10000 --ksm=$(BIN)/kube-state-metrics

## bench-100k: the same over 100,000 objects; loading them takes minutes.
bench-100k: $(BIN)/kube-state-metrics
	cd sandbox && $(GO) run ./cmd/flux-bench --objects=100000 --timeout=4h --ksm=$(BIN)/kube-state-metrics

## demo: a real API server with a churning Flux fleet, and flux_exporter scraping it.
demo:
	./scripts/demo.sh

tools: $(BIN)/promu $(BIN)/helm $(BIN)/flux $(BIN)/dashboard-linter $(BIN)/kube-state-metrics $(BIN)/notification-controller

## flux-controllers: the four real Flux controllers pinned in
## tools/flux-controllers/go.mod. make test needs only notification-controller
## (the live webhook test); the others take minutes each to build.
flux-controllers: $(BIN)/source-controller $(BIN)/kustomize-controller $(BIN)/helm-controller $(BIN)/notification-controller

## record-timelines: record the timelines of sandbox/cmd/flux-record from
## source-, kustomize- and helm-controller into
## sandbox/e2e/testdata/recorded (make test replays them; minutes per build).
record-timelines: $(BIN)/source-controller $(BIN)/kustomize-controller $(BIN)/helm-controller
	cd sandbox && PATH="$(BIN):$$PATH" $(GO) run ./cmd/flux-record -out e2e/testdata/recorded $(if $(SCENARIO),-scenario $(SCENARIO))

# A real Flux controller built from its module (tools/flux-controllers/README.md).
$(BIN)/source-controller $(BIN)/kustomize-controller $(BIN)/helm-controller $(BIN)/notification-controller: tools/flux-controllers/go.mod tools/flux-controllers/build.sh
	GO="$(GO)" sh tools/flux-controllers/build.sh $(notdir $@) $@

$(BIN)/promu: tools/promu/go.mod
	cd tools/promu && $(GO) build -o $@ github.com/prometheus/promu

# helm reads its own version and the Kubernetes version it assumes from
# ldflags; without them it renders as v3.19 for Kubernetes 1.20 and refuses
# the chart's kubeVersion.
HELM_VERSION   = $(shell cd tools/helm && $(GO) list -m -f '{{.Version}}' helm.sh/helm/v3)
HELM_K8S_MINOR = $(word 2,$(subst ., ,$(shell cd tools/helm && $(GO) list -m -f '{{.Version}}' k8s.io/client-go)))
HELM_LDFLAGS   = -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_K8S_MINOR) \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_K8S_MINOR)

$(BIN)/helm: tools/helm/go.mod
	cd tools/helm && $(GO) build -ldflags "$(HELM_LDFLAGS)" -o $@ helm.sh/helm/v3/cmd/helm

# The flux CLI, for comparing `flux get` and `flux stats` with the exporter.
# Its module zip lacks the manifests cmd/flux embeds; the script builds a copy
# with a placeholder (tools/flux/README.md).
$(BIN)/flux: tools/flux/go.mod tools/flux/build.sh
	GO="$(GO)" sh tools/flux/build.sh $@

# kube-state-metrics, for `make bench` only: a separate program the benchmark
# runs beside flux_exporter, never linked into it and not part of `make test`.
# Its `version` command prints prometheus/common's version variables, which
# its release build sets; without them it reports an empty version.
KSM_VERSION = $(shell cd tools/kube-state-metrics && $(GO) list -m -f '{{.Version}}' k8s.io/kube-state-metrics/v2)

$(BIN)/kube-state-metrics: tools/kube-state-metrics/go.mod
	cd tools/kube-state-metrics && $(GO) build -trimpath -ldflags "-X github.com/prometheus/common/version.Version=$(KSM_VERSION)" -o $@ k8s.io/kube-state-metrics/v2

## deploy-generate: kustomize inputs derived from alerts/ and dashboards/ (gitignored).
deploy-generate:
	sh deploy/generate.sh

## image-binary: what the Dockerfile copies.
image-binary: $(BIN)/promu
	GOOS=linux GOARCH=amd64 $(BIN)/promu build --prefix .build/linux-amd64

$(BIN)/dashboard-linter: tools/dashboard-linter/go.mod
	cd tools/dashboard-linter && GONOSUMDB=github.com/grafana/dashboard-linter $(GO) build -o $@ github.com/grafana/dashboard-linter

clean:
	rm -rf $(BIN) .build flux_exporter
