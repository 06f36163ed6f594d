"""Connections to the clusters where trainers run, each with its caches.

The home cluster (where the operator runs) serves Managed and Standalone ClipClusters.
A BringYourOwn ClipCluster is reached with the kubeconfig in its Secret. A connection is
rebuilt when that Secret changes or when the remote API server answers 401, so rotated
tokens and expired exec-plugin credentials are picked up without a restart (the
kubernetes client also refreshes exec-plugin tokens by itself when they carry an expiry).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes import client, config as kube_config
from kubernetes.client.exceptions import ApiException

from kubeclip.api.cluster import ClipClusterSpec
from kubeclip.api.job import InfrastructureType
from kubeclip.api.status import ConditionReason
from kubeclip.builders.naming import JOB_UID_LABEL, TRAINER_SELECTOR
from kubeclip.operator.informer import Informer
from kubeclip.operator.problems import Problem

logger = logging.getLogger(__name__)

#: Namespace trainers run in on a BringYourOwn cluster whose ClipCluster sets none.
DEFAULT_REMOTE_NAMESPACE = "kubeclip-jobs"
HOME = "home"


@dataclass
class ClusterConnection:
    """An API client for one cluster and informers for the trainer objects in it."""

    key: str
    api_client: client.ApiClient
    #: Namespace the informers watch; None watches all namespaces (the home cluster).
    namespace: str | None
    is_home: bool
    secret_version: str | None = None
    jobs: Informer | None = None
    pods: Informer | None = None
    configmaps: Informer | None = None
    unauthorized: threading.Event = field(default_factory=threading.Event)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api_client)

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api_client)

    def start(self, on_change: Callable[[dict[str, Any]], None], watch_timeout_seconds: int) -> ClusterConnection:
        """Start the informers of trainer Jobs, pods and ConfigMaps; ``on_change`` gets every changed object."""
        core, batch = self.core, self.batch
        self.jobs = self._informer("jobs", batch.list_job_for_all_namespaces, batch.list_namespaced_job, on_change, watch_timeout_seconds)
        self.pods = self._informer("pods", core.list_pod_for_all_namespaces, core.list_namespaced_pod, on_change, watch_timeout_seconds)
        self.configmaps = self._informer(
            "configmaps", core.list_config_map_for_all_namespaces, core.list_namespaced_config_map, on_change, watch_timeout_seconds
        )
        return self

    def _informer(
        self,
        kind: str,
        all_namespaces: Callable[..., Any],
        namespaced: Callable[..., Any],
        on_change: Callable[[dict[str, Any]], None],
        watch_timeout_seconds: int,
    ) -> Informer:
        arguments = {} if self.namespace is None else {"namespace": self.namespace}
        function = all_namespaces if self.namespace is None else namespaced
        return Informer(
            f"{self.key}/{kind}",
            function,
            label_selector=TRAINER_SELECTOR,
            on_change=on_change,
            on_unauthorized=self.unauthorized.set,
            watch_timeout_seconds=watch_timeout_seconds,
            list_arguments=arguments,
        ).start()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every cache is filled; False at the timeout, or at once when the cluster refused the credentials."""
        deadline = time.monotonic() + timeout
        for informer in self._informers():
            while not informer.wait_synced(0.2):
                if self.unauthorized.is_set() or time.monotonic() > deadline:
                    return False
        return True

    def stop(self) -> None:
        """Stop the informers and close the API client's connection pool."""
        for informer in self._informers():
            informer.stop()
        self.api_client.close()

    def pods_of(self, job_uid: str) -> list[dict[str, Any]]:
        """Return the cached trainer pods of the ClipTrainingJob with ``job_uid``."""
        return self.pods.select(lambda pod: pod["metadata"].get("labels", {}).get(JOB_UID_LABEL) == job_uid)

    def _informers(self) -> list[Informer]:
        return [informer for informer in (self.jobs, self.pods, self.configmaps) if informer is not None]


class ClusterRegistry:
    """Creates, caches and replaces the connections, one per cluster."""

    def __init__(self, home_client: client.ApiClient, on_change: Callable[[dict[str, Any]], None], *, watch_timeout_seconds: int, sync_timeout: float) -> None:
        self._home_client = home_client
        self._on_change = on_change
        self._watch_timeout = watch_timeout_seconds
        self._sync_timeout = sync_timeout
        self._connections: dict[str, ClusterConnection] = {}
        self._lock = threading.Lock()

    def home(self) -> ClusterConnection:
        """Return the connection to the operator's own cluster, starting its informers on the first call.

        Raises:
            Problem: the caches did not fill within the sync timeout.
        """
        with self._lock:
            connection = self._connections.get(HOME)
            if connection is None:
                connection = ClusterConnection(HOME, self._home_client, None, True).start(self._on_change, self._watch_timeout)
                self._connections[HOME] = connection
        self._wait_synced(connection, HOME)
        return connection

    def connect(self, cluster_name: str, spec: ClipClusterSpec) -> ClusterConnection:
        """Return the connection for a ClipCluster, creating or renewing it as needed.

        Raises:
            Problem: the kubeconfig Secret is missing or invalid, or the cluster cannot be reached.
        """
        if spec.type != InfrastructureType.BRING_YOUR_OWN:
            return self.home()
        secret = self._read_kubeconfig_secret(cluster_name, spec)
        key = f"remote/{cluster_name}"
        namespace = spec.namespace or DEFAULT_REMOTE_NAMESPACE
        version = secret["metadata"]["resourceVersion"]
        with self._lock:
            connection = self._connections.get(key)
            stale = connection is not None and (
                connection.secret_version != version or connection.unauthorized.is_set() or connection.namespace != namespace
            )
            if stale:
                logger.info(
                    "reconnecting to cluster %s because its kubeconfig Secret changed or its API server rejected the credentials",
                    cluster_name,
                    extra={"cluster": cluster_name},
                )
                connection.stop()
                connection = None
            if connection is None:
                api_client = _client_from_secret(cluster_name, spec, secret)
                connection = ClusterConnection(key, api_client, namespace, False, version).start(self._on_change, self._watch_timeout)
                self._connections[key] = connection
        self._wait_synced(connection, cluster_name)
        return connection

    def forget(self, cluster_name: str) -> None:
        """Stop and drop the connection to a BringYourOwn cluster, for a deleted ClipCluster."""
        with self._lock:
            connection = self._connections.pop(f"remote/{cluster_name}", None)
        if connection is not None:
            connection.stop()

    def stop(self) -> None:
        """Stop every connection, the home one included."""
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.stop()

    def _wait_synced(self, connection: ClusterConnection, name: str) -> None:
        if connection.wait_synced(self._sync_timeout):
            return
        if connection.unauthorized.is_set():
            raise Problem(
                ConditionReason.CLUSTER_UNREACHABLE,
                f"cluster {name} refused the operator's credentials (401); renew the kubeconfig Secret of ClipCluster {name}",
                retry=True,
            )
        raise Problem(
            ConditionReason.CLUSTER_UNREACHABLE,
            f"cluster {name} did not answer within {self._sync_timeout:.0f} s; check that its API server is reachable from the operator "
            f"and that the kubeconfig's identity may list Jobs, pods and ConfigMaps in namespace {connection.namespace or 'any'}",
            retry=True,
        )

    def _read_kubeconfig_secret(self, cluster_name: str, spec: ClipClusterSpec) -> dict[str, Any]:
        ref = spec.kubeconfig_secret_ref
        try:
            response = client.CoreV1Api(self._home_client).read_namespaced_secret(ref.name, ref.namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                raise Problem(
                    ConditionReason.SECRET_NOT_FOUND,
                    f"ClipCluster {cluster_name} names kubeconfig Secret {ref.namespace}/{ref.name}, which does not exist; "
                    f"create it with: kubectl create secret generic {ref.name} -n {ref.namespace} --from-file={ref.key}=PATH",
                    retry=True,
                ) from None
            if error.status == 403:
                raise Problem(
                    ConditionReason.CLUSTER_UNREACHABLE,
                    f"the operator may not read kubeconfig Secret {ref.namespace}/{ref.name} of ClipCluster {cluster_name} (403 Forbidden); "
                    f"grant the operator's identity get on Secrets in namespace {ref.namespace}, as the Helm chart's ClusterRole does",
                    retry=True,
                ) from None
            raise
        secret = json.loads(response.data)
        if ref.key not in (secret.get("data") or {}):
            raise Problem(
                ConditionReason.SECRET_NOT_FOUND,
                f"Secret {ref.namespace}/{ref.name} of ClipCluster {cluster_name} has no key {ref.key!r}; "
                f"put the kubeconfig under that key or set spec.kubeconfigSecretRef.key",
                retry=True,
            )
        return secret


def _client_from_secret(cluster_name: str, spec: ClipClusterSpec, secret: dict[str, Any]) -> client.ApiClient:
    ref = spec.kubeconfig_secret_ref
    try:
        document = yaml.safe_load(base64.b64decode(secret["data"][ref.key]))
        configuration = client.Configuration()
        loader = kube_config.kube_config.KubeConfigLoader(config_dict=document)
        loader.load_and_set(configuration)
    except Exception as error:  # noqa: BLE001 - the loader raises many kinds for a bad document
        raise Problem(
            ConditionReason.CLUSTER_UNREACHABLE,
            f"the kubeconfig in Secret {ref.namespace}/{ref.name} (key {ref.key}) of ClipCluster {cluster_name} cannot be used: "
            f"{type(error).__name__}: {_first_line(error)}; check it with kubectl --kubeconfig FILE get pods -n {spec.namespace or DEFAULT_REMOTE_NAMESPACE}",
            retry=True,
        ) from None
    return client.ApiClient(configuration)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else ""
