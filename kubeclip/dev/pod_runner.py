"""Runs the trainer pods that kwok binds to simulated GPU nodes as local processes.

kwok plays the kubelet of the simulated nodes but is no container runtime, so no
container runs there. ``PodRunner`` watches the pods labelled
``app.kubernetes.io/name=kubeclip-trainer`` in every namespace, and runs each one bound
to a kwok node once (keyed by pod UID), with the command, environment and folders that
``kubeclip.dev.pod_workspace`` prepares:

- when the process exits, the runner sets the pod's outcome through the kwok Stages of
  ``kubeclip.dev.kwok_config``: label ``kubeclip.dev/pod-outcome=Succeeded`` for exit
  code 0, else the ``kubeclip.dev/pod-exit-code`` annotation and the label ``Failed``,
  in one patch, so the annotation is present when the label selects the pod for kwok;
- when the pod gets a deletion timestamp or disappears while its process runs (a Job
  suspended or deleted, an eviction), the process gets SIGTERM and, after the pod's
  grace period, SIGKILL. No outcome is set then;
- a pod owned by the same controller as a pod whose process still runs (a Job's
  replacement pod) starts only after that process ends, as it would once the kubelet
  had stopped the old container.

Called by ``kubeclip dev run-pods`` (``kubeclip.cli.dev``) and by the test fixtures.
Typical use::

    with PodRunner.for_cluster(cluster.state, work_dir=tmp_path / "pods") as runner:
        ...  # create a Job
        process = runner.wait_ended(pod_name, timeout=180)
        assert process.exit_code == 0, runner.log_of(pod_name)
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from kubeclip.dev import cluster as dev_cluster
from kubeclip.dev.kwok_config import FAKE_NODE_ANNOTATION, POD_EXIT_CODE_ANNOTATION, POD_OUTCOME_LABEL
from kubeclip.dev.pod_workspace import ApiServer, LocalContainer, PodSetupError, prepare_container

logger = logging.getLogger(__name__)

TRAINER_SELECTOR = "app.kubernetes.io/name=kubeclip-trainer"
#: Seconds each watch request lasts on the server before the runner watches again.
WATCH_TIMEOUT_SECONDS = 30
#: Seconds between attempts to prepare a container whose ConfigMap, Secret or key is missing.
SETUP_RETRY_SECONDS = 1.0
#: Default of ``stop_grace_seconds``: seconds that ``stop`` gives running processes between SIGTERM and SIGKILL.
STOP_GRACE_SECONDS = 10.0
#: terminationGracePeriodSeconds when a pod sets none (the Kubernetes default).
DEFAULT_GRACE_SECONDS = 30.0
_MERGE_PATCH = "application/merge-patch+json"
_TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(eq=False)
class PodProcess:
    """The local process of one pod, and what became of it."""

    namespace: str
    name: str
    uid: str
    #: UID of the pod's controller (its Job), or None.
    owner_uid: str | None
    log_path: Path
    #: The pod's terminationGracePeriodSeconds.
    grace_seconds: float
    started: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    #: Exit code as the kubelet reports it: 128 + N for a process ended by signal N.
    exit_code: int | None = None
    #: Why the container could not be prepared yet (a missing ConfigMap, for example).
    setup_error: str | None = None
    #: True once the pod had a deletion timestamp or was gone.
    deleted: bool = False
    popen: subprocess.Popen[bytes] | None = None


class PodRunner:
    """Plays the kubelet for trainer pods on kwok nodes; a context manager that stops every process on exit.

    Args:
        kubeconfig: Kubeconfig the runner acts with. It lists and patches pods, reads
            nodes, ConfigMaps, Secrets and ServiceAccounts and requests ServiceAccount
            tokens, which the development cluster's admin kubeconfig may do.
        api_server: Where the processes reach the API server, and its CA.
        work_dir: Folder for pod folders (``pods/``), logs (``logs/NAMESPACE_POD.log``)
            and claim folders (``pvc/CLAIM``).
        extra_env: Variables given to every process, before the container's own.
        stop_grace_seconds: Seconds ``stop`` gives running processes between SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        kubeconfig: Path,
        api_server: ApiServer,
        *,
        work_dir: Path,
        extra_env: dict[str, str] | None = None,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.api_server = api_server
        self.work_dir = work_dir
        self.extra_env = dict(extra_env or {})
        self.stop_grace_seconds = stop_grace_seconds
        self._api_client: client.ApiClient | None = None
        self._lock = threading.Lock()
        self._records: dict[str, PodProcess] = {}
        self._threads: list[threading.Thread] = []
        self._fake_nodes: dict[str, bool] = {}
        self._stopping = threading.Event()
        self._watch: watch.Watch | None = None
        self._watch_thread: threading.Thread | None = None

    @classmethod
    def for_cluster(
        cls, state: dev_cluster.ClusterState, *, work_dir: Path, extra_env: dict[str, str] | None = None, stop_grace_seconds: float = STOP_GRACE_SECONDS
    ) -> PodRunner:
        """Return a runner for the development cluster ``state``, acting with its admin kubeconfig."""
        return cls(state.kubeconfig, api_server_of(state), work_dir=work_dir, extra_env=extra_env, stop_grace_seconds=stop_grace_seconds)

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> PodRunner:
        for folder in ("pods", "logs", "pvc"):
            (self.work_dir / folder).mkdir(parents=True, exist_ok=True)
        # A client of its own, so stopping the watch never touches the caller's connections.
        self._api_client = dev_cluster.new_api_client(self.kubeconfig)
        self.core = client.CoreV1Api(self._api_client)
        self._watch_thread = threading.Thread(target=self._watch_pods, name="pod-runner-watch", daemon=True)
        self._watch_thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop watching, send SIGTERM to every running process and SIGKILL after ``stop_grace_seconds``."""
        self._stopping.set()
        while self._watch_thread is not None and self._watch_thread.is_alive():
            # Watch.stop() is lost if it comes between two watch requests, so it is repeated.
            if self._watch is not None:
                self._watch.stop()
            self._watch_thread.join(0.2)
        running = [record for record in self.processes if record.popen is not None and record.popen.poll() is None]
        if running:
            logger.info("stopping; sending SIGTERM to the %d running process(es), and SIGKILL after %.0f s", len(running), self.stop_grace_seconds)
        for record in running:
            self._append_log(record, "pod runner stopping; sending SIGTERM")
            record.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_seconds
        for record in running:
            _wait_or_kill(record, max(0.0, deadline - time.monotonic()))
        for thread in list(self._threads):
            thread.join(self.stop_grace_seconds)
        if self._api_client is not None:
            self._api_client.close()

    # -- what callers read ----------------------------------------------------------------

    @property
    def processes(self) -> list[PodProcess]:
        """Every pod the runner took on, in the order it saw them."""
        with self._lock:
            return list(self._records.values())

    def find(self, pod_name: str, namespace: str | None = None) -> PodProcess | None:
        """Return the newest process record of pod ``pod_name``, or None."""
        matches = [record for record in self.processes if record.name == pod_name and namespace in (None, record.namespace)]
        return matches[-1] if matches else None

    def wait_started(self, pod_name: str, timeout: float, namespace: str | None = None) -> PodProcess:
        """Wait until the process of ``pod_name`` has started; raise TimeoutError with its log otherwise."""
        return self._wait_for_record(pod_name, namespace, timeout, "started", lambda record: record.started.is_set())

    def wait_ended(self, pod_name: str, timeout: float, namespace: str | None = None) -> PodProcess:
        """Wait until the process of ``pod_name`` has ended (or was never started because the pod was deleted)."""
        return self._wait_for_record(pod_name, namespace, timeout, "ended", lambda record: record.ended.is_set())

    def wait_idle(self, timeout: float) -> None:
        """Wait until no pod is being prepared or run; raise TimeoutError naming the busy pods otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            busy = [record for record in self.processes if not record.ended.is_set()]
            if not busy:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{record.namespace}/{record.name}" for record in busy)
                raise TimeoutError(f"pod runner still busy after {timeout:.0f} s with {names}")
            busy[0].ended.wait(0.1)

    def _wait_for_record(self, pod_name: str, namespace: str | None, timeout: float, state: str, reached) -> PodProcess:
        deadline = time.monotonic() + timeout
        while True:
            record = self.find(pod_name, namespace)
            if record is not None and reached(record):
                return record
            if time.monotonic() > deadline:
                reason = f"; last setup error: {record.setup_error}" if record is not None and record.setup_error else ""
                raise TimeoutError(f"the process of pod {pod_name} has not {state} after {timeout:.0f} s{reason}; its log:\n{self.log_of(pod_name, namespace)}")
            time.sleep(0.1)

    def log_of(self, pod_name: str, namespace: str | None = None) -> str:
        """Return the output of the pod's process, with the runner's own lines marked ``[pod-runner]``."""
        record = self.find(pod_name, namespace)
        if record is None:
            return f"(the pod runner never saw pod {pod_name})"
        return record.log_path.read_text(errors="replace") if record.log_path.exists() else "(no output)"

    def kill(self, pod_name: str, signal_number: int = signal.SIGKILL, namespace: str | None = None) -> None:
        """Send ``signal_number`` to the process group of the pod's running process, as a crash or the OOM killer would.

        The pod is not deleted: the process's exit becomes the pod's outcome, as when a container dies.
        """
        record = self.find(pod_name, namespace)
        if record is None or record.popen is None or record.popen.poll() is not None:
            raise AssertionError(f"pod {pod_name} has no running process to signal; its log:\n{self.log_of(pod_name, namespace)}")
        self._append_log(record, f"test sends signal {signal.Signals(signal_number).name}")
        os.killpg(record.popen.pid, signal_number)

    def is_running(self, pod_name: str, namespace: str | None = None) -> bool:
        """Whether the newest process of ``pod_name`` has started and not ended."""
        record = self.find(pod_name, namespace)
        return record is not None and record.started.is_set() and not record.ended.is_set()

    def claim_dir(self, claim_name: str) -> Path:
        """Return the local folder of PersistentVolumeClaim ``claim_name``, shared by all pods and namespaces."""
        return self.work_dir / "pvc" / claim_name

    # -- watching -------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        resource_version: str | None = None
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list_pods()
                resource_version = self._follow_pods(resource_version)
            except ApiException as error:
                if error.status == 410:
                    resource_version = None  # the watch expired: list again
                    continue
                logger.warning("watching trainer pods failed; retrying in 1 s", extra={"error": f"HTTP {error.status} {error.reason}"})
                self._stopping.wait(1.0)
            except Exception as error:  # noqa: BLE001 - connection errors, and the socket that stop() shuts down
                if not self._stopping.is_set():
                    logger.warning("watching trainer pods failed; retrying in 1 s", extra={"error": repr(error)})
                    self._stopping.wait(1.0)

    def _list_pods(self) -> str:
        listing = self.core.list_pod_for_all_namespaces(label_selector=TRAINER_SELECTOR)
        for pod in listing.items:
            self._handle(pod, deleted=False)
        return listing.metadata.resource_version

    def _follow_pods(self, resource_version: str) -> str:
        self._watch = watch.Watch()
        stream = self._watch.stream(
            self.core.list_pod_for_all_namespaces, label_selector=TRAINER_SELECTOR, resource_version=resource_version, timeout_seconds=WATCH_TIMEOUT_SECONDS
        )
        for event in stream:
            if self._stopping.is_set():
                break
            self._handle(event["object"], deleted=event["type"] == "DELETED")
        return self._watch.resource_version or resource_version

    def _handle(self, pod: client.V1Pod, *, deleted: bool) -> None:
        with self._lock:
            record = self._records.get(pod.metadata.uid)
        if deleted or pod.metadata.deletion_timestamp is not None:
            if record is not None:
                self._request_termination(record, pod)
            return
        if record is not None or pod.status.phase in _TERMINAL_PHASES or not self._is_on_kwok_node(pod):
            return
        record = self._new_record(pod)
        thread = threading.Thread(target=self._run_pod, args=(record, pod), name=f"pod-runner-{pod.metadata.name}", daemon=True)
        with self._lock:
            self._records[record.uid] = record
            self._threads.append(thread)
        thread.start()

    def _is_on_kwok_node(self, pod: client.V1Pod) -> bool:
        node_name = pod.spec.node_name
        if not node_name:
            return False
        if node_name not in self._fake_nodes:
            try:
                annotations = self.core.read_node(node_name).metadata.annotations or {}
            except ApiException as error:
                if error.status != 404:
                    raise
                annotations = {}
            self._fake_nodes[node_name] = annotations.get(FAKE_NODE_ANNOTATION) == "fake"
        return self._fake_nodes[node_name]

    def _new_record(self, pod: client.V1Pod) -> PodProcess:
        owner = next((reference for reference in pod.metadata.owner_references or [] if reference.controller), None)
        grace = pod.spec.termination_grace_period_seconds
        return PodProcess(
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
            owner_uid=owner.uid if owner is not None else None,
            log_path=self.work_dir / "logs" / f"{pod.metadata.namespace}_{pod.metadata.name}.log",
            grace_seconds=float(grace) if grace is not None else DEFAULT_GRACE_SECONDS,
        )

    # -- one pod's process ----------------------------------------------------------------

    def _run_pod(self, record: PodProcess, pod: client.V1Pod) -> None:
        try:
            container = self._prepare_until_ready(record, pod)
            if container is None:
                return
            self._wait_for_earlier_pods(record)
            if not self._start(record, container):
                return
            record.exit_code = _kubelet_exit_code(record.popen.wait())
            self._append_log(record, f"process exited with code {record.exit_code}")
            logger.info("pod %s/%s: process exited with code %d; log %s", record.namespace, record.name, record.exit_code, record.log_path)
            if not record.deleted and not self._stopping.is_set():
                self._set_outcome(record)
        except Exception as error:  # noqa: BLE001 - recorded for the caller; a waiting test then times out with this message
            record.setup_error = f"pod runner failed: {error!r}"
            self._append_log(record, record.setup_error)
            logger.exception("pod runner failed", extra={"pod": f"{record.namespace}/{record.name}"})
        finally:
            record.ended.set()

    def _prepare_until_ready(self, record: PodProcess, pod: client.V1Pod) -> LocalContainer | None:
        """Prepare the container, retrying while a referenced object is missing; None if the pod went away first."""
        pod_dir = self.work_dir / "pods" / f"{record.namespace}_{record.name}_{record.uid[:8]}"
        while not self._stopping.is_set() and not record.deleted:
            try:
                container = prepare_container(self.core, pod, pod_dir=pod_dir, claims_dir=self.work_dir / "pvc", api_server=self.api_server, extra_env=self.extra_env)
            except PodSetupError as error:
                if str(error) != record.setup_error:
                    self._append_log(record, f"cannot start yet: {error}")
                    logger.info("pod %s/%s cannot start yet, retrying every %.0f s: %s", record.namespace, record.name, SETUP_RETRY_SECONDS, error)
                record.setup_error = str(error)
                self._stopping.wait(SETUP_RETRY_SECONDS)
                continue
            record.setup_error = None
            for note in container.notes:
                self._append_log(record, note)
            return container
        return None

    def _wait_for_earlier_pods(self, record: PodProcess) -> None:
        if record.owner_uid is None:
            return
        while not self._stopping.is_set() and not record.deleted:
            earlier = [
                other
                for other in self.processes
                if other is not record and other.owner_uid == record.owner_uid and other.started.is_set() and not other.ended.is_set()
            ]
            if not earlier:
                return
            self._append_log(record, f"waiting for the process of pod {earlier[0].name}, of the same owner, to end")
            earlier[0].ended.wait(1.0)

    def _start(self, record: PodProcess, container: LocalContainer) -> bool:
        """Start the process unless the pod was deleted meanwhile; the lock orders this against ``_request_termination``."""
        with self._lock:
            if record.deleted or self._stopping.is_set():
                return False
            self._append_log(record, f"starting {container.command[0]} with {len(container.command) - 1} arguments in {container.cwd}")
            with record.log_path.open("ab") as log:
                # A session of its own, so SIGKILL reaches the data loader workers too.
                record.popen = subprocess.Popen(
                    container.command, env=container.env, cwd=container.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            record.started.set()
        logger.info("pod %s/%s: started process %d; log %s", record.namespace, record.name, record.popen.pid, record.log_path)
        return True

    def _request_termination(self, record: PodProcess, pod: client.V1Pod) -> None:
        with self._lock:
            already = record.deleted
            record.deleted = True
            popen = record.popen
        if already or popen is None or popen.poll() is not None:
            return
        # A grace period of 0 (a force delete) falls back to the pod's own, so the process can still save a checkpoint.
        grace = pod.metadata.deletion_grace_period_seconds or record.grace_seconds
        self._append_log(record, f"pod deleted; sending SIGTERM, and SIGKILL after {grace:.0f} s")
        logger.info("pod %s/%s deleted; sending SIGTERM to process %d, and SIGKILL after %.0f s", record.namespace, record.name, popen.pid, grace)
        popen.send_signal(signal.SIGTERM)
        threading.Thread(target=_wait_or_kill, args=(record, float(grace)), name=f"pod-runner-kill-{record.name}", daemon=True).start()

    def _set_outcome(self, record: PodProcess) -> None:
        if record.exit_code == 0:
            metadata: dict[str, object] = {"labels": {POD_OUTCOME_LABEL: "Succeeded"}}
        else:
            metadata = {"annotations": {POD_EXIT_CODE_ANNOTATION: str(record.exit_code)}, "labels": {POD_OUTCOME_LABEL: "Failed"}}
        try:
            self.core.patch_namespaced_pod(record.name, record.namespace, {"metadata": metadata}, _content_type=_MERGE_PATCH)
        except ApiException as error:
            if error.status != 404:
                raise
            self._append_log(record, "the pod is gone; no outcome set")

    def _append_log(self, record: PodProcess, line: str) -> None:
        with record.log_path.open("a", encoding="utf-8") as log:
            log.write(f"[pod-runner] {line}\n")


def api_server_of(state: dev_cluster.ClusterState) -> ApiServer:
    """Return where processes reach the API server of the development cluster ``state``, and its CA."""
    return ApiServer("127.0.0.1", state.ports.apiserver, state.layout.pki.ca_certificate)


def _wait_or_kill(record: PodProcess, grace_seconds: float) -> None:
    """Wait ``grace_seconds`` for the process to exit, then SIGKILL its whole session."""
    popen = record.popen
    if popen is None:
        return
    try:
        popen.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        with record.log_path.open("a", encoding="utf-8") as log:
            log.write(f"[pod-runner] still running after {grace_seconds:.0f} s; sending SIGKILL\n")
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        popen.wait()


def _kubelet_exit_code(returncode: int) -> int:
    """Turn Popen's ``-N`` for death by signal N into the 128 + N that the kubelet reports."""
    return 128 - returncode if returncode < 0 else returncode
