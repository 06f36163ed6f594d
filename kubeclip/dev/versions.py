"""Pinned releases of the components of the development control plane.

Read by ``kubeclip.dev.binaries`` (what to build) and ``kubeclip.dev.cluster`` (which
cached binaries to start). Changing a version here makes the next ``up`` or
``scripts/install-control-plane.sh`` build that version into its own cache folder.
"""

from __future__ import annotations

#: Kubernetes release of kube-apiserver, kube-controller-manager, kube-scheduler and kubectl.
#: The go.mod of v1.36.x declares ``go 1.26.0``, so the local Go 1.26 builds it without a toolchain download.
KUBERNETES_VERSION = "v1.36.3"

#: Tag of the published staging modules (k8s.io/api, k8s.io/client-go, ...) that matches
#: KUBERNETES_VERSION: staging tag v0.Y.Z is cut from Kubernetes v1.Y.Z.
STAGING_VERSION = "v0.36.3"

#: etcd server release: the one that the go.mod of k8s.io/kubernetes v1.36.3 requires.
#: Debian bookworm's etcd-server 3.4.23 is older than the 3.4.29 minimum that Kubernetes
#: documents since 1.31, so etcd is built from go.etcd.io/etcd/server/v3 instead.
ETCD_VERSION = "v3.6.8"

#: kwok release. v0.8.0 is built against the k8s.io v0.36 libraries and ships no
#: default Stages, so ``kubeclip.dev.kwok_config`` writes its own.
KWOK_VERSION = "v0.8.0"

#: helm release (helm.sh/helm/v3), for chart tests against the development cluster.
HELM_VERSION = "v3.21.4"

#: Staging modules that k8s.io/kubernetes v1.36 requires at the placeholder version v0.0.0.
#: Its go.mod maps them to ./staging with replace lines, and the go command ignores the
#: replace lines of a dependency, so the wrapper module repeats them with real versions.
STAGING_MODULES = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "cri-streaming",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "streaming",
)
