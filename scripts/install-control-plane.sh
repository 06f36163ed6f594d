#!/usr/bin/env bash
# Build what the control-plane tests (pytest -m controlplane) and `kubeclip dev cluster up`
# need: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd from
# k8s.io/kubernetes and go.etcd.io/etcd (one go build in a generated wrapper module),
# kwok and helm from their modules, and Prometheus from Debian.
#
# Idempotent: binaries already under ~/.cache/kubeclip/bin (or $KUBECLIP_CACHE_DIR/bin)
# are kept, and prometheus is installed only when missing. The versions are pinned in
# kubeclip/dev/versions.py. Needs Go 1.26+, the Go module proxy, and apt-get for
# Prometheus. A cold build takes tens of minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
if ! "$python" -c 'import kubeclip.dev.binaries' 2>/dev/null; then
    echo "error: $python cannot import kubeclip.dev; run scripts/setup.sh first or set PYTHON to the venv's python" >&2
    exit 1
fi
if ! command -v go >/dev/null 2>&1; then
    echo "error: go is not on PATH; install Go 1.26 or newer (k8s.io/kubernetes v1.36 needs it)" >&2
    exit 1
fi

# Components build one after another with go build -p 2, so the build leaves memory
# and cores for other work. Cached binaries are skipped.
"$python" -m kubeclip.dev.binaries

if ! command -v prometheus >/dev/null 2>&1; then
    echo "installing prometheus from Debian"
    sudo_prefix=()
    if [[ $(id -u) -ne 0 ]]; then sudo_prefix=(sudo); fi
    "${sudo_prefix[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_prefix[@]}" apt-get install -y -qq --no-install-recommends prometheus
fi
echo "prometheus: $(command -v prometheus)"
