#!/usr/bin/env bash
# make demo: a real API server with a churning Flux fleet and stand-in Flux
# controllers, and flux_exporter scraping both. Ctrl-C stops everything and
# removes everything this script made.
#
# Arguments go to flux-sandbox, e.g. --objects 1000, or --mode crd for a
# faster start without controllers (see go run ./cmd/flux-sandbox --help in
# sandbox/).
set -euo pipefail
# Started in the background by another script, this one inherits SIGINT
# ignored, and bash cannot trap a signal ignored on entry: restart with the
# default restored, so that kill -INT still stops the demo cleanly.
if [ -n "$(trap -p INT)" ] && [ -z "${FLUX_DEMO_SIGINT:-}" ] && env --default-signal=INT true 2>/dev/null; then
  FLUX_DEMO_SIGINT=restored exec env --default-signal=INT bash "$0" "$@"
fi
cd "$(dirname "$0")/.."

demo_dir=$(mktemp -d -t flux-exporter-demo-XXXXXX)
sandbox_pid=""
exporter_pid=""
cleanup() {
  trap - INT TERM EXIT
  for pid in $exporter_pid $sandbox_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $exporter_pid $sandbox_pid; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$demo_dir"
  echo "Demo stopped; nothing left behind."
}
trap cleanup EXIT
# Ctrl-C is how the demo is meant to end, so it is a clean exit, not 130.
trap 'cleanup; exit 0' INT TERM

# progress LABEL TOTAL WHAT: counts the lines of `go mod download -json`
# ("Path" lines) or `go build -v` (one package per line) on stdin, showing
# N of TOTAL on one line on a terminal and every 100 otherwise, and passes
# errors through.
progress() {
  local label=$1 total=$2 what=$3 n=0 start=$SECONDS line
  while IFS= read -r line; do
    case "$what:$line" in
      modules:*'"Path":'*) ;;
      modules:*'"Error":'*) echo "$line" >&2; continue ;;
      modules:*) continue ;;
      packages:*.go:*|packages:'#'*|packages:go:*) echo "$line" >&2; continue ;;
    esac
    n=$((n + 1))
    if [ -t 1 ]; then
      printf '\r  %s: %d of %d %s (%ds)   ' "$label" "$n" "$total" "$what" $((SECONDS - start))
    elif [ $((n % 100)) -eq 0 ]; then
      echo "  $label: $n of $total $what ($((SECONDS - start))s)"
    fi
  done
  [ -t 1 ] && printf '\n'
  echo "  $label: $n $what in $((SECONDS - start))s"
}

# build LABEL DIR PACKAGE OUTPUT: downloads the module's dependencies, then
# compiles, both with a running count; a cold first run compiles the
# in-process Kubernetes API server, about 2,000 packages.
build() {
  local label=$1 dir=$2 pkg=$3 out=$4 total
  total=$(cd "$dir" && go list -m all 2>/dev/null | wc -l)
  echo "Downloading the Go modules of $label (only on the first run)..."
  (cd "$dir" && go mod download -json) | progress "$label" "$total" modules
  total=$(cd "$dir" && go list -deps "$pkg" | wc -l)
  echo "Compiling $label ($total packages; unchanged ones come from Go's build cache)..."
  (cd "$dir" && go build -v -o "$out" "$pkg" 2>&1) | progress "$label" "$total" packages
}

build "flux-sandbox, an in-process Kubernetes API server with a Flux fleet" sandbox ./cmd/flux-sandbox "$demo_dir/flux-sandbox"
build "flux_exporter" . . "$demo_dir/flux_exporter"

kubeconfig="$demo_dir/kubeconfig"
"$demo_dir/flux-sandbox" --kubeconfig-out "$kubeconfig" --ready-file "$demo_dir/ready" "$@" &
sandbox_pid=$!
for _ in $(seq 1 600); do
  [ -f "$demo_dir/ready" ] && break
  kill -0 "$sandbox_pid" 2>/dev/null || { echo "flux-sandbox exited before it was ready" >&2; exit 1; }
  sleep 0.2
done
[ -f "$demo_dir/ready" ] || { echo "flux-sandbox not ready after 120s" >&2; exit 1; }

listen="${FLUX_EXPORTER_LISTEN:-127.0.0.1:9899}"
"$demo_dir/flux_exporter" --kube.config "$kubeconfig" --web.listen-address "$listen" \
  --events.enabled --events.allow-unsigned --log.level warn &
exporter_pid=$!
for _ in $(seq 1 300); do
  curl -fsS "http://$listen/-/ready" >/dev/null 2>&1 && break
  kill -0 "$exporter_pid" 2>/dev/null || { echo "flux_exporter exited; see its log above" >&2; exit 1; }
  sleep 0.2
done

cat <<MSG

flux_exporter is scraping the sandbox fleet.
  Metrics:     curl -s http://$listen/metrics | grep ^flux_resource_info
  Controllers: curl -s http://$listen/metrics | grep -E '^flux_(controller_workqueue_depth|controller_info|distribution_info)'
  Ready:       curl -s http://$listen/-/ready
  Compare:     kubectl --kubeconfig $kubeconfig get gitrepositories,kustomizations,helmreleases -A
  Events:      curl -s -XPOST -H 'Content-Type: application/json' http://$listen/api/v1/events -d '{"involvedObject":{"kind":"Kustomization","namespace":"flux-system","name":"apps"},"severity":"info","reason":"ReconciliationSucceeded","message":"demo","reportingController":"kustomize-controller","timestamp":"2026-01-01T00:00:00Z"}'
Churn runs quietly; ./scripts/demo.sh --churn-log shows every change it makes.
Press Ctrl-C to stop.
MSG
wait -n "$sandbox_pid" "$exporter_pid"
