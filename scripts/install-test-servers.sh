#!/usr/bin/env bash
# Build the test servers that the object-store tests (pytest -m objectstore) start on
# 127.0.0.1. moto's S3 server comes with the Python test dependencies (moto[server]);
# fake-gcs-server is a Go program, built here from its module with `go install`.
#
# Skips the build when the binary exists, so CI can call it on every run.
# Needs Go and access to the Go module proxy for the first build. The path must stay
# in step with FAKE_GCS_SERVER_BINARY in tests/support/objectstores.py.
set -euo pipefail

FAKE_GCS_SERVER_VERSION="v1.56.1"
INSTALL_DIR="${HOME}/.cache/kubeclip/bin/fake-gcs-server-${FAKE_GCS_SERVER_VERSION}"
BINARY="${INSTALL_DIR}/fake-gcs-server"

if [[ -x "${BINARY}" ]]; then
    echo "fake-gcs-server ${FAKE_GCS_SERVER_VERSION} is already installed at ${BINARY}"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "error: go is not on PATH; install Go 1.26 or newer (the go.mod of fake-gcs-server v1.56.1 requires it)" >&2
    exit 1
fi

echo "building fake-gcs-server ${FAKE_GCS_SERVER_VERSION} into ${INSTALL_DIR}"
mkdir -p "${INSTALL_DIR}"
GOBIN="${INSTALL_DIR}" go install "github.com/fsouza/fake-gcs-server@${FAKE_GCS_SERVER_VERSION}"
if ! "${BINARY}" -help >/dev/null 2>&1; then
    echo "error: ${BINARY} was built but does not run; delete ${INSTALL_DIR} and run this script again" >&2
    exit 1
fi
echo "installed ${BINARY}"
