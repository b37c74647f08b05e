#!/bin/sh
# Builds the flux CLI pinned in tools/flux/go.mod into OUTPUT, for the tests.
#
# Usage: tools/flux/build.sh OUTPUT
#
# The module zip lacks the generated cmd/flux/manifests/*.yaml that
# cmd/flux embeds, so the source is copied from the module cache to a scratch
# directory, given a placeholder manifest, and built there. See README.md.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 OUTPUT" >&2; exit 2; }
case $1 in
/*) out=$1 ;;
*) out=$PWD/$1 ;;
esac

GO=${GO:-go}
mod=github.com/fluxcd/flux2/v2
cd "$(dirname "$0")"

# Download (checked against this directory's go.sum), then locate the source.
$GO mod download "$mod"
version=$($GO list -m -f '{{.Version}}' "$mod")
src=$($GO list -m -f '{{.Dir}}' "$mod")
[ -n "$version" ] && [ -d "$src" ] || { echo "$0: $mod not found in the module cache" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/flux-build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT INT TERM

# The module cache is read-only; the copy must be writable to add the file.
cp -R "$src/." "$work/"
chmod -R u+w "$work"
mkdir -p "$work/cmd/flux/manifests"
cat >"$work/cmd/flux/manifests/placeholder.yaml" <<'EOF'
# Placeholder so that //go:embed manifests/*.yaml compiles. This flux binary
# is a test tool for `flux get` and `flux stats`; it cannot install or
# bootstrap Flux.
EOF

cd "$work"
GOWORK=off $GO build -trimpath -ldflags "-X main.VERSION=${version#v}" -o "$out" ./cmd/flux
