"""The trainer's progress report: the JSON built from Reporter events, its throttling, and the ConfigMap writes.

Unit tests drive a real ``Reporter`` with a fake clock and collect the published
documents in a list. The ``controlplane`` tests run a short real training that writes
the progress ConfigMap of the development cluster as a ServiceAccount with the Role
the operator creates.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from kubeclip.trainer import progress_configmap
from kubeclip.trainer.__main__ import run_and_report
from kubeclip.trainer.errors import DatasetError, TrainingInterrupted
from kubeclip.trainer.metrics import TrainerMetrics
from kubeclip.trainer.progress import ProgressReport, open_progress_report, read_interval
from kubeclip.trainer.progress_configmap import ConfigMapWriter, ServiceAccountToken
from kubeclip.trainer.reporting import Reporter
from tests.support.controlplane import ControlPlane, create_namespace
from tests.support.training import make_config

START = datetime.datetime(2026, 12, 4, 10, 0, 0, tzinfo=datetime.timezone.utc)


class FakeClock:
    """Monotonic seconds and wall-clock time that move only when a test advances them."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime.datetime:
        return START + datetime.timedelta(seconds=self.seconds)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


class ListPublisher:
    """Keeps every published document, parsed."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.closed_with: float | None = None

    def publish(self, document: str) -> None:
        self.documents.append(json.loads(document))

    def close(self, timeout: float) -> bool:
        self.closed_with = timeout
        return True

    @property
    def last(self) -> dict[str, Any]:
        return self.documents[-1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def publisher() -> ListPublisher:
    return ListPublisher()


@pytest.fixture
def report(publisher: ListPublisher, clock: FakeClock) -> ProgressReport:
    return ProgressReport(publisher, pod="job-abc12", output_location="s3://bucket/run", save_total_limit=2, interval_seconds=10, clock=clock.monotonic, now=clock.now)


def make_reporter(tmp_path: Path, clock: FakeClock, report: ProgressReport, total_steps: int = 40) -> Reporter:
    metrics = TrainerMetrics(CollectorRegistry())
    return Reporter(metrics, tmp_path / "metrics.jsonl", total_steps=total_steps, steps_per_epoch=10, clock=clock.monotonic, sinks=[report])


def validation_results(loss: float = 1.9) -> dict[str, float]:
    return {
        "loss": loss,
        "image_to_text_r1": 0.1, "image_to_text_r5": 0.3, "image_to_text_r10": 0.5,
        "text_to_image_r1": 0.2, "text_to_image_r5": 0.4, "text_to_image_r10": 0.6,
        "image_to_text_chance_r1": 0.05,
    }  # fmt: skip


# -- the document -------------------------------------------------------------------


def test_report_opens_in_starting_state(report, publisher):
    assert publisher.documents == [{"state": "Starting", "pod": "job-abc12", "updatedTime": "2026-12-04T10:00:00Z"}]


def test_begin_publishes_running_with_total_steps(tmp_path, clock, report, publisher):
    reporter = make_reporter(tmp_path, clock, report, total_steps=40)

    reporter.restore([])

    assert len(publisher.documents) == 2
    assert publisher.last["state"] == "Running"
    assert publisher.last["totalSteps"] == 40


def test_training_figures_match_history_entry(tmp_path, clock, report, publisher):
    reporter = make_reporter(tmp_path, clock, report)
    reporter.restore([])
    for step in (1, 2):
        clock.advance(2.0)
        reporter.record_step(step=step, samples=8, loss=1.0 + step, learning_rate=1e-4, logit_scale=14.0)
    clock.advance(10.0)

    entry = reporter.log_progress(step=2, epoch=0, learning_rate=1e-4)

    document = publisher.last
    assert document["step"] == 2
    assert document["epoch"] == 0
    assert document["loss"] == entry["loss"] == 2.5
    assert document["learningRate"] == entry["learning_rate"]
    assert document["samplesPerSecond"] == entry["samples_per_second"] == 16 / 14
    assert document["etaSeconds"] == round(entry["estimated_remaining_seconds"]) == 266


def test_step_updates_wait_for_interval(tmp_path, clock, report, publisher):
    reporter = make_reporter(tmp_path, clock, report)
    reporter.restore([])
    published_before = len(publisher.documents)

    clock.advance(9.9)
    reporter.record_step(step=1, samples=8, loss=1.0, learning_rate=1e-4, logit_scale=14.0)
    assert len(publisher.documents) == published_before

    clock.advance(0.1)
    reporter.record_step(step=2, samples=8, loss=1.0, learning_rate=1e-4, logit_scale=14.0)
    assert len(publisher.documents) == published_before + 1
    assert publisher.last["step"] == 2


def test_evaluation_published_at_once_with_recall_fields(tmp_path, clock, report, publisher):
    reporter = make_reporter(tmp_path, clock, report)
    reporter.restore([])
    clock.advance(1.0)

    reporter.log_evaluation(step=20, epoch=1, split="validation", results=validation_results())

    assert publisher.last["evaluation"] == {
        "step": 20,
        "split": "validation",
        "loss": 1.9,
        "imageToTextRecallAt1": 0.1,
        "imageToTextRecallAt5": 0.3,
        "textToImageRecallAt1": 0.2,
        "textToImageRecallAt5": 0.4,
        "evaluatedTime": "2026-12-04T10:00:01Z",
    }


def test_training_split_evaluation_left_out(tmp_path, clock, report, publisher):
    reporter = make_reporter(tmp_path, clock, report)
    reporter.restore([])
    reporter.log_evaluation(step=20, epoch=1, split="validation", results=validation_results(loss=1.9))

    reporter.log_evaluation(step=20, epoch=1, split="train", results=validation_results(loss=0.5))

    assert report.document["evaluation"]["loss"] == 1.9


def test_checkpoints_keep_newest_within_limit(tmp_path, clock, report, publisher):
    reporter = make_reporter(tmp_path, clock, report)
    reporter.restore([])

    for step in (10, 20, 30):
        clock.advance(5.0)
        reporter.log_checkpoint(step=step, name=f"checkpoint-{step}", seconds=0.5)

    assert publisher.last["checkpoints"] == [
        {"name": "checkpoint-20", "step": 20, "uri": "s3://bucket/run/checkpoints/checkpoint-20", "savedTime": "2026-12-04T10:00:10Z"},
        {"name": "checkpoint-30", "step": 30, "uri": "s3://bucket/run/checkpoints/checkpoint-30", "savedTime": "2026-12-04T10:00:15Z"},
    ]


def test_resumed_run_starts_from_history_and_checkpoint(tmp_path, clock, report, publisher):
    reporter = make_reporter(tmp_path, clock, report)
    history = [
        {"kind": "train", "step": 10, "epoch": 0, "loss": 2.0, "learning_rate": 1e-4, "samples_per_second": 30.0, "estimated_remaining_seconds": 90.0},
        {"kind": "eval", "split": "validation", "step": 10, "epoch": 1, **validation_results(loss=1.5)},
        {"kind": "checkpoint", "step": 10, "name": "checkpoint-10", "seconds": 0.5},
        {"kind": "train", "step": 20, "epoch": 1, "loss": 1.0, "learning_rate": 1e-4, "samples_per_second": 30.0, "estimated_remaining_seconds": 60.0},
    ]

    reporter.restore(history, resumed_checkpoint="checkpoint-20")

    document = publisher.last
    assert document["state"] == "Running"
    assert document["step"] == 20
    assert document["loss"] == 1.0
    assert document["evaluation"]["loss"] == 1.5
    assert "evaluatedTime" not in document["evaluation"]
    assert [checkpoint["name"] for checkpoint in document["checkpoints"]] == ["checkpoint-10", "checkpoint-20"]
    assert "savedTime" not in document["checkpoints"][1]


def test_non_finite_loss_left_out_of_json(tmp_path, clock, report, publisher):
    reporter = make_reporter(tmp_path, clock, report)
    reporter.restore([])
    clock.advance(10.0)
    reporter.record_step(step=1, samples=8, loss=float("nan"), learning_rate=1e-4, logit_scale=14.0)

    reporter.log_progress(step=1, epoch=0, learning_rate=1e-4)

    assert "loss" not in publisher.last
    assert publisher.last["step"] == 1


def test_success_published_once_with_model_uri(report, publisher, clock):
    clock.advance(1.0)
    report.finish_succeeded("s3://bucket/run/model")
    report.finish_failed(DatasetError("late failure"), 3)

    assert publisher.last["state"] == "Succeeded"
    assert publisher.last["modelUri"] == "s3://bucket/run/model"
    assert "error" not in publisher.last
    assert len(publisher.documents) == 2


def test_failure_reports_reason_exit_code_and_message(report, publisher):
    report.finish_failed(DatasetError("captions.jsonl line 3 is not JSON; fix the line"), 3)

    assert publisher.last["state"] == "Failed"
    assert publisher.last["error"] == {"reason": "DatasetError", "exitCode": 3, "message": "captions.jsonl line 3 is not JSON; fix the line"}


def test_long_error_message_cut(report, publisher):
    report.finish_failed(DatasetError("x" * 10_000), 3)

    assert len(publisher.last["error"]["message"]) == 4096
    assert publisher.last["error"]["message"].endswith("…")


def test_stop_signal_reports_interrupted(report, publisher):
    report.finish_failed(TrainingInterrupted("stopped by signal 15 at step 12"), 75)

    assert publisher.last["state"] == "Interrupted"
    assert "error" not in publisher.last


def test_events_after_end_ignored(tmp_path, clock, report, publisher):
    reporter = make_reporter(tmp_path, clock, report)
    reporter.restore([])
    report.finish_succeeded("s3://bucket/run/model")
    published = len(publisher.documents)

    reporter.log_checkpoint(step=40, name="checkpoint-40", seconds=0.5)

    assert len(publisher.documents) == published


def test_close_waits_for_publisher(report, publisher):
    assert report.close(timeout=3.0)
    assert publisher.closed_with == 3.0


def test_failing_sink_never_stops_reporter(tmp_path, clock):
    class BrokenSink:
        def begin(self, **_: Any) -> None:
            raise RuntimeError("sink is broken")

        def receive(self, entry: dict[str, Any]) -> None:
            raise RuntimeError("sink is broken")

    reporter = Reporter(TrainerMetrics(CollectorRegistry()), tmp_path / "metrics.jsonl", total_steps=4, steps_per_epoch=2, clock=clock.monotonic, sinks=[BrokenSink()])
    with capture_logs("kubeclip.trainer.reporting") as records:
        reporter.restore([])
        reporter.record_step(step=1, samples=8, loss=1.0, learning_rate=1e-4, logit_scale=14.0)
        reporter.log_checkpoint(step=1, name="checkpoint-1", seconds=0.1)

    assert [entry["kind"] for entry in reporter.history] == ["checkpoint"]
    assert [record.getMessage() for record in records].count("a report sink failed; training goes on, and later failures of this sink are not logged") == 1


@pytest.mark.parametrize(("raw", "expected"), [(None, 10.0), ("", 10.0), ("2.5", 2.5), ("0", 0.0), ("-1", 10.0), ("soon", 10.0), ("nan", 10.0)])
def test_interval_read_from_environment(raw, expected):
    environ = {} if raw is None else {"KUBECLIP_PROGRESS_INTERVAL_SECONDS": raw}

    assert read_interval(environ) == expected


# -- opening the report and writing the ConfigMap -------------------------------------------


def test_no_configmap_variable_means_no_report(tmp_path):
    config = make_config(tmp_path / "data.zip", tmp_path / "out", tmp_path / "cache")

    assert open_progress_report(config, environ={"KUBECLIP_POD_NAME": "pod"}) is None


def test_missing_token_turns_reports_off_with_warning(tmp_path):
    config = make_config(tmp_path / "data.zip", tmp_path / "out", tmp_path / "cache")
    environ = {
        "KUBECLIP_PROGRESS_CONFIGMAP": "job-progress", "KUBECLIP_PROGRESS_NAMESPACE": "team",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
        "KUBECLIP_SERVICE_ACCOUNT_DIR": str(tmp_path / "no-such-folder"),
    }  # fmt: skip

    with capture_logs("kubeclip.trainer.progress") as records:
        report = open_progress_report(config, environ=environ)

    assert report is None
    assert any("no-such-folder" in str(getattr(record, "error", "")) for record in records)


def test_token_read_again_after_rotation(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    token = ServiceAccountToken(token_file)
    configuration = client.Configuration()

    token.refresh(configuration)
    first = configuration.api_key["BearerToken"]
    rotated = tmp_path / "token.new"
    rotated.write_text("second-token-after-rotation\n")
    rotated.replace(token_file)
    token.refresh(configuration)

    assert first == "Bearer first-token"
    assert configuration.api_key["BearerToken"] == "Bearer second-token-after-rotation"


class FakeCoreApi:
    """Records PATCH bodies; ``failures`` lists exceptions to raise first, one per call."""

    def __init__(self, failures: list[Exception] | None = None, gate: threading.Event | None = None) -> None:
        self.failures = list(failures or [])
        self.gate = gate
        self.bodies: list[dict[str, Any]] = []
        self.content_types: list[str] = []

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any], **options: Any) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        self.content_types.append(options["_content_type"])
        if self.failures:
            raise self.failures.pop(0)
        self.bodies.append(body)


def test_writer_merge_patches_newest_document():
    gate = threading.Event()
    core = FakeCoreApi(gate=gate)
    writer = ConfigMapWriter(core, "team", "job-progress")

    writer.publish('{"step": 1}')
    writer.publish('{"step": 2}')
    writer.publish('{"step": 3}')
    gate.set()

    assert writer.close(timeout=5)
    assert core.bodies[-1] == {"data": {"progress.json": '{"step": 3}'}}
    assert len(core.bodies) <= 2
    assert set(core.content_types) == {"application/merge-patch+json"}


def test_writer_drops_forbidden_write_with_warning():
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps({"kind": "Status", "message": 'configmaps "other" is forbidden: User "system:serviceaccount:team:job" cannot patch'})
    core = FakeCoreApi(failures=[forbidden])
    writer = ConfigMapWriter(core, "team", "other")

    with capture_logs("kubeclip.trainer.progress_configmap") as records:
        writer.publish('{"step": 1}')
        assert writer.close(timeout=5)

    assert core.bodies == []
    warnings = [record for record in records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "HTTP 403" in warnings[0].error
    assert "cannot patch" in warnings[0].error


def test_writer_retries_server_error(monkeypatch):
    monkeypatch.setattr(progress_configmap, "RETRY_DELAY_SECONDS", (0.01, 0.02))
    core = FakeCoreApi(failures=[ApiException(status=503, reason="Service Unavailable"), ConnectionResetError("connection reset")])
    writer = ConfigMapWriter(core, "team", "job-progress")

    writer.publish('{"state": "Succeeded"}')

    assert writer.close(timeout=5)
    assert core.bodies == [{"data": {"progress.json": '{"state": "Succeeded"}'}}]
    assert len(core.content_types) == 3


@contextlib.contextmanager
def capture_logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """Collect the records of logger ``name``, even when ``configure_logging`` stopped its propagation to the root."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    target = logging.getLogger(name)
    previous_level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        target.removeHandler(handler)
        target.setLevel(previous_level)


# -- against the development cluster ----------------------------------------------------


def create_progress_identity(plane: ControlPlane, namespace: str, folder: Path, allowed_configmap: str) -> Path:
    """Create the ServiceAccount, Role and RoleBinding the operator creates, and write the SA token folder."""
    rbac = client.RbacAuthorizationV1Api(plane.api_client)
    plane.core.create_namespaced_service_account(namespace, {"metadata": {"name": "trainer"}})
    rule = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [allowed_configmap], "verbs": ["get", "patch", "update"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "trainer"}, "rules": [rule]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "trainer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trainer"},
        "subjects": [{"kind": "ServiceAccount", "name": "trainer", "namespace": namespace}],
    })  # fmt: skip
    request = plane.core.create_namespaced_service_account_token("trainer", namespace, {"spec": {"expirationSeconds": 3600}})
    folder.mkdir(parents=True)
    (folder / "token").write_text(request.status.token)
    (folder / "ca.crt").write_bytes(plane.state.layout.pki.ca_certificate.read_bytes())
    (folder / "namespace").write_text(namespace)
    return folder


@pytest.fixture
def progress_namespace(cluster: ControlPlane, request) -> Iterator[str]:
    name = f"progress-{request.node.name.removeprefix('test_')[:30].replace('_', '-')}".rstrip("-")
    create_namespace(cluster, name)
    yield name
    cluster.core.delete_namespace(name)


def point_trainer_at(monkeypatch, plane: ControlPlane, namespace: str, configmap: str, token_folder: Path) -> None:
    monkeypatch.setenv("KUBECLIP_PROGRESS_CONFIGMAP", configmap)
    monkeypatch.setenv("KUBECLIP_PROGRESS_NAMESPACE", namespace)
    monkeypatch.setenv("KUBECLIP_POD_NAME", "trainer-pod-x1")
    monkeypatch.setenv("KUBECLIP_SERVICE_ACCOUNT_DIR", str(token_folder))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(plane.state.ports.apiserver))


def read_progress(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    data = plane.core.read_namespaced_config_map(name, namespace).data or {}
    return json.loads(data["progress.json"]) if "progress.json" in data else None


@pytest.mark.controlplane
def test_training_writes_progress_configmap(cluster, progress_namespace, tinted_zip, tmp_path, monkeypatch):
    namespace = progress_namespace
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "job-progress"}})
    folder = create_progress_identity(cluster, namespace, tmp_path / "serviceaccount", allowed_configmap="job-progress")
    point_trainer_at(monkeypatch, cluster, namespace, "job-progress", folder)
    config = make_config(tinted_zip, tmp_path / "out", tmp_path / "cache")

    exit_code = run_and_report(config)

    progress = read_progress(cluster, namespace, "job-progress")
    assert exit_code == 0
    assert progress is not None
    assert progress["state"] == "Succeeded"
    assert progress["pod"] == "trainer-pod-x1"
    assert progress["totalSteps"] == 8
    assert progress["step"] == 8
    assert progress["modelUri"] == str(tmp_path / "out" / "model")
    assert progress["evaluation"]["step"] == 8
    assert progress["evaluation"]["split"] == "validation"
    assert 0.0 <= progress["evaluation"]["textToImageRecallAt5"] <= 1.0
    assert [checkpoint["name"] for checkpoint in progress["checkpoints"]] == ["checkpoint-4", "checkpoint-8"]
    assert progress["checkpoints"][1]["uri"] == f"{tmp_path / 'out'}/checkpoints/checkpoint-8"


@pytest.mark.controlplane
def test_forbidden_configmap_warns_and_training_succeeds(cluster, progress_namespace, tinted_zip, tmp_path, monkeypatch):
    namespace = progress_namespace
    for name in ("job-progress", "someone-else"):
        cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    folder = create_progress_identity(cluster, namespace, tmp_path / "serviceaccount", allowed_configmap="job-progress")
    point_trainer_at(monkeypatch, cluster, namespace, "someone-else", folder)
    config = make_config(tinted_zip, tmp_path / "out", tmp_path / "cache", optimization={"max_steps": 4})

    with capture_logs("kubeclip.trainer.progress_configmap") as records:
        exit_code = run_and_report(config)

    warnings = [record for record in records if record.levelno == logging.WARNING]
    assert exit_code == 0
    assert (tmp_path / "out" / "model").is_dir()
    assert read_progress(cluster, namespace, "someone-else") is None
    assert len(warnings) == 1
    assert "HTTP 403" in warnings[0].error
    token = (folder / "token").read_text()
    assert all(token not in record.getMessage() and token not in str(record.__dict__) for record in records)


def test_environment_overrides_move_paths_and_port(tmp_path: Path) -> None:
    from kubeclip.trainer.__main__ import with_environment_overrides

    config = make_config(tmp_path / "data.zip", "/mnt/output/run", tmp_path / "cache")
    moved = with_environment_overrides(config, {"KUBECLIP_OUTPUT_LOCATION": str(tmp_path / "out"), "KUBECLIP_CACHE_DIR": "/tmp/c", "KUBECLIP_METRICS_PORT": "0"})
    assert (moved.output.location, moved.runtime.cache_dir, moved.runtime.metrics_port) == (str(tmp_path / "out"), "/tmp/c", 0)
    assert with_environment_overrides(config, {}) == config
    with pytest.raises(ValueError, match="KUBECLIP_METRICS_PORT='http' is not a port"):
        with_environment_overrides(config, {"KUBECLIP_METRICS_PORT": "http"})
