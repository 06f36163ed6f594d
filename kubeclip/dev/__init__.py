"""A local Kubernetes control plane for tests and demos: ``kubeclip dev cluster up|status|down``.

Modules, in the order they depend on each other:

- ``versions``: the pinned releases of every component.
- ``binaries``: builds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
  etcd, kwok and helm from their Go modules and caches them under ``~/.cache/kubeclip/bin``.
- ``certificates``: the cluster CA, serving and client certificates, the service-account key.
- ``kubeconfig``: kubeconfig files for the admin and for each component.
- ``kwok_config``: simulated GPU and CPU nodes and the kwok Stage configuration.
- ``processes``: starts components in their own process groups and stops them by PID.
- ``health``: HTTPS health checks and waits.
- ``cluster``: the cluster lifecycle that ``kubeclip.cli.dev`` and the test fixtures call.
- ``pod_workspace`` and ``pod_runner``: run the trainer pods bound to simulated nodes as
  local processes with the pod's environment and mounts (``kubeclip dev run-pods``), since
  kwok simulates nodes without a container runtime.
"""

#: Name of the cluster that ``kubeclip dev cluster`` commands act on without --name.
DEFAULT_CLUSTER_NAME = "kubeclip"
