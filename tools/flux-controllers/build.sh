#!/bin/sh
# Builds one Flux controller pinned in tools/flux-controllers/go.mod into
# OUTPUT, for the tests that run the real controllers.
#
# Usage: tools/flux-controllers/build.sh CONTROLLER OUTPUT
#   CONTROLLER: source-controller, kustomize-controller, helm-controller or
#   notification-controller.
#
# Each controller's go.mod replaces its own api module with ./api, which the
# module zip has no go.sum entries for in that form; the copy drops that one
# replace so the published api module of the same version is used. See
# README.md.
set -eu

[ $# -eq 2 ] || { echo "usage: $0 CONTROLLER OUTPUT" >&2; exit 2; }
case $1 in
source-controller | kustomize-controller | helm-controller | notification-controller) ;;
*) echo "$0: unknown controller $1 (want source-, kustomize-, helm- or notification-controller)" >&2; exit 2 ;;
esac
case $2 in
/*) out=$2 ;;
*) out=$PWD/$2 ;;
esac

GO=${GO:-go}
mod=github.com/fluxcd/$1
cd "$(dirname "$0")"

# Download (checked against this directory's go.sum), then locate the source.
$GO mod download "$mod"
version=$($GO list -m -f '{{.Version}}' "$mod")
src=$($GO list -m -f '{{.Dir}}' "$mod")
[ -n "$version" ] && [ -d "$src" ] || { echo "$0: $mod not found in the module cache" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/$1-build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT INT TERM

cp -R "$src/." "$work/"
chmod -R u+w "$work"
cd "$work"
GOWORK=off $GO mod edit -dropreplace "$mod/api"
# -mod=mod: the api module now comes from the proxy, so go.sum gains its hash.
GOWORK=off GOFLAGS=-mod=mod $GO build -trimpath -o "$out" ./
