#!/usr/bin/env bash
# Set up a development machine: a virtualenv in .venv with kubeclip installed
# editable. With --test, also the test extras and the test servers built from Go.
#
#   scripts/setup.sh            # enough for `kubeclip train`
#   scripts/setup.sh --test     # plus what `pytest` needs
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=false
for arg in "$@"; do
    case "$arg" in
        --test) with_tests=true ;;
        *) echo "usage: scripts/setup.sh [--test]" >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: kubeclip needs Python 3.11 or newer; set PYTHON to one" >&2
    exit 1
fi

# torch from PyPI is a large CUDA build; pip's own cache (~/.cache/pip) makes a
# reinstall on the same machine quick.
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if $with_tests; then
    .venv/bin/python -m pip install --quiet -e ".[test,benchmark]"
    bash scripts/install-test-servers.sh
    bash scripts/install-control-plane.sh
else
    .venv/bin/python -m pip install --quiet -e .
fi
echo "kubeclip is installed in .venv: run .venv/bin/kubeclip --help"
