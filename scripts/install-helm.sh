#!/usr/bin/env bash
# Build helm from source with the Go toolchain (the Go module proxy is the one place it can come
# from here; prebuilt release downloads are unreachable). Idempotent: skips the build when the
# pinned version is already in the cache. Prints the binary's path on the last line.
#
#   bash scripts/install-helm.sh            # -> ${CFSTREAM_CACHE_DIR:-~/.cache/cfstream}/bin/helm
#   HELM_VERSION=v3.21.4 bash scripts/install-helm.sh
set -euo pipefail

# Newest helm v3 that the Go module proxy served and that builds on go 1.26.
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_DIR="${CFSTREAM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cfstream}"
BIN_DIR="$CACHE_DIR/bin"
HELM="$BIN_DIR/helm"
STAMP="$BIN_DIR/.helm-version"

if ! command -v go >/dev/null 2>&1; then
    for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
        if [[ -x "$candidate" ]]; then PATH="$(dirname "$candidate"):$PATH"; break; fi
    done
fi

# The stamp also names the build recipe, so a change to the flags below forces a rebuild.
RECIPE="$HELM_VERSION ldflags-v1"
if [[ -x "$HELM" && -f "$STAMP" && "$(cat "$STAMP")" == "$RECIPE" ]]; then
    echo "helm $HELM_VERSION already installed" >&2
    echo "$HELM"
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "install-helm: the go toolchain is required" >&2; exit 1; }

# helm's own Makefile stamps its version and the Kubernetes version it was built against (from
# k8s.io/client-go in its go.mod) with -ldflags. A plain `go install` leaves them at v1.20, which
# makes `helm template` refuse charts that declare a newer kubeVersion.
GOMOD="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
CLIENT_GO="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$GOMOD")"   # e.g. v0.37.0
K8S_MINOR="$(echo "$CLIENT_GO" | cut -d. -f2)"
[[ "$K8S_MINOR" =~ ^[0-9]+$ ]] || { echo "install-helm: no k8s.io/client-go in $GOMOD" >&2; exit 1; }
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    LDFLAGS+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${K8S_MINOR}"
done

mkdir -p "$BIN_DIR"
echo "building helm $HELM_VERSION with $(go version) (a few minutes on 2 cores)" >&2
start=$SECONDS
# -trimpath keeps the binary reproducible; the Go module cache makes rebuilds fast.
GOBIN="$BIN_DIR" CGO_ENABLED=0 \
    go install -trimpath -ldflags "$LDFLAGS" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
echo "$RECIPE" > "$STAMP"
echo "built helm $HELM_VERSION (Kubernetes 1.$K8S_MINOR) in $((SECONDS - start)) s" >&2
"$HELM" version --short >&2
echo "$HELM"
