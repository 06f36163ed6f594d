"""``kubeclip train`` end to end, in a subprocess, with the metrics endpoint scraped over HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.training import free_port

JOB = {
    "apiVersion": "kubeclip.dev/v1alpha1",
    "kind": "ClipTrainingJob",
    "metadata": {"name": "cli-test"},
    "spec": {
        "model": {"preset": "Small", "projectionDim": 64},
        "dataset": {"source": {"uri": "PLACEHOLDER"}, "promptMaxLength": 32, "trainSplitRatio": 0.75, "validationSplitRatio": 0.25},
        "infrastructure": {"gpuType": "A100"},
        "training": {
            "epochs": 40,
            "perDeviceTrainBatchSize": 8,
            "perDeviceEvalBatchSize": 16,
            "learningRate": "3e-4",
            "torchDtype": "bfloat16",
            "loggingSteps": 2,
            "evalSteps": 40,
            "saveSteps": 80,
            "dataLoaderWorkers": 2,
        },
    },
}


def write_job(tmp_path: Path, dataset: Path, **training) -> Path:
    job = json.loads(json.dumps(JOB))
    job["spec"]["dataset"]["source"]["uri"] = str(dataset)
    job["spec"]["training"].update(training)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return path


def kubeclip(*args: str, cache: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "kubeclip.cli.main", *args, "--cache-dir", str(cache), "--no-progress"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def scrape_when(port: int, condition, timeout: float, process: subprocess.Popen) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"kubeclip exited early with {process.returncode}: {process.stderr.read()[-3000:]}")
        try:
            samples = scrape(port)
            if condition(samples):
                return samples
        except OSError:
            pass  # the endpoint starts after the dataset and model are ready
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for the metrics condition")


@pytest.mark.slow
def test_train_command_serves_metrics_and_prints_summary(tinted_zip, tmp_path):
    port = free_port()
    process = kubeclip("train", str(write_job(tmp_path, tinted_zip)), "--output", str(tmp_path / "out"), "--metrics-port", str(port), cache=tmp_path / "cache")

    during = scrape_when(port, lambda s: s.get("kubeclip_train_steps_total", 0) >= 10, 180, process)
    steps = during["kubeclip_train_steps_total"]
    samples = during["kubeclip_train_samples_total"]
    # Steps and samples are counted in the training process, not in the two loader
    # workers; a scrape may fall between the two increments of one step.
    assert steps * 8 <= samples <= (steps + 1) * 8
    assert during["kubeclip_train_loss"] > 0
    assert during["kubeclip_train_learning_rate"] > 0
    assert during["kubeclip_train_samples_per_second"] > 0
    assert 'kubeclip_eval_recall_ratio{direction="text_to_image",k="5"}' in during
    assert "kubeclip_eval_loss" in during

    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "validation (12 images)" in stdout
    assert "text_to_image_r5" in stdout
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    progress = [entry for entry in logs if entry["message"] == "training progress"]
    assert progress and progress[0]["job"] == {"namespace": "default", "name": "cli-test"}
    assert {"loss", "learning_rate", "samples_per_second", "epoch", "step"} <= progress[0].keys()
    assert any("float32 (bfloat16 requested" in entry.get("precision", "") for entry in logs)


def test_train_command_rejects_invalid_job(tmp_path, tinted_zip):
    job = write_job(tmp_path, tinted_zip, perDeviceTrainBatchSize=1)
    process = kubeclip("train", str(job), cache=tmp_path / "cache")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "spec.training.perDeviceTrainBatchSize: Input should be greater than or equal to 2" in stderr


def test_train_command_fails_on_invalid_dataset(tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip archive")
    process = kubeclip("train", str(write_job(tmp_path, broken)), "--output", str(tmp_path / "out"), cache=tmp_path / "cache")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr[-2000:]
    assert "broken.zip" in stderr
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output": {"storageUri": "pvc://claim/path"}}, "is a PersistentVolumeClaim, which exists only in a cluster; pass --output DIR"),
        ({"dataset": {"datasetRef": {"name": "flickr"}}}, "names a ClipDataset, which exists only in a cluster"),
    ],
)
def test_train_command_rejects_cluster_only_settings(tmp_path, tinted_zip, change, message):
    job = yaml.safe_load(write_job(tmp_path, tinted_zip).read_text())
    if "dataset" in change:
        job["spec"]["dataset"] = change["dataset"]
    else:
        job["spec"].update(change)
    path = tmp_path / "cluster-only.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    process = kubeclip("train", str(path), cache=tmp_path / "cache")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert message in stderr
