"""A whole training run on CPU: it learns, saves a loadable model, and resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import VisionTextDualEncoderModel, VisionTextDualEncoderProcessor

from kubeclip.trainer import checkpoint as checkpoint_module
from kubeclip.trainer.errors import ExitCode
from kubeclip.trainer.run import run_training
from tests.support.training import make_config


@pytest.fixture(scope="module")
def finished_run(tinted_zip, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    # 40 epochs of 4 steps: enough for the Small preset to learn the tint colours.
    config = make_config(tinted_zip, root / "out", root / "cache", optimization={"epochs": 40}, schedule={"save_steps": 40, "eval_steps": 40})
    return config, run_training(config)


def test_run_loss_finite_and_falls(finished_run):
    _, result = finished_run
    before, after = result.figures["baseline_validation"], result.figures["final_validation"]
    assert torch.isfinite(torch.tensor(after["loss"]))
    assert after["loss"] < before["loss"]


def test_run_validation_recall_above_chance(finished_run):
    _, result = finished_run
    before, after = result.figures["baseline_validation"], result.figures["final_validation"]
    # Twelve validation images in four colours: a model that learned colour ranks the
    # three images of a caption's colour first, so recall@5 reaches 1.
    assert after["text_to_image_r5"] == 1.0
    assert before["text_to_image_r5"] < 0.75
    assert result.figures["final_model_check"]["matched_similarity"] > result.figures["final_model_check"]["mismatched_similarity"]


def test_final_model_loads_with_from_pretrained(finished_run):
    _, result = finished_run
    model_dir = result.output_dir / "model"
    model = VisionTextDualEncoderModel.from_pretrained(model_dir)
    processor = VisionTextDualEncoderProcessor.from_pretrained(model_dir)
    inputs = processor(text=["a red tinted photograph"], return_tensors="pt")
    features = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).pooler_output
    assert features.shape == (1, 64)


def test_model_card_has_figures_and_checksum(finished_run):
    _, result = finished_run
    card = (result.output_dir / "model" / "README.md").read_text()
    summary = json.loads((result.output_dir / "summary.json").read_text())
    assert summary["weights_sha256"] in card
    assert "text_to_image_r5" in card
    assert f"{summary['final_validation']['loss']:.4f}" in card


def test_run_writes_plot_history_and_keeps_two_checkpoints(finished_run):
    _, result = finished_run
    assert (result.output_dir / "training_curves.png").stat().st_size > 10_000
    history = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert {entry["kind"] for entry in history} == {"train", "eval", "checkpoint"}
    assert {entry["split"] for entry in history if entry["kind"] == "eval"} == {"train", "validation"}
    checkpoints = sorted(path.name for path in (result.output_dir / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-120", "checkpoint-160"]


def test_interrupted_save_leaves_no_complete_checkpoint(tinted_zip, tmp_path, monkeypatch):
    config = make_config(tinted_zip, tmp_path / "out", tmp_path / "cache", optimization={"max_steps": 8})
    calls = {"count": 0}
    real_fsync_tree = checkpoint_module._fsync_tree

    def crash_on_second_save(folder):
        calls["count"] += 1
        if calls["count"] == 2:
            raise OSError("simulated crash while writing the checkpoint")
        real_fsync_tree(folder)

    monkeypatch.setattr(checkpoint_module, "_fsync_tree", crash_on_second_save)
    with pytest.raises(OSError, match="simulated crash"):
        run_training(config)
    folder = tmp_path / "out" / "checkpoints"
    assert sorted(path.name for path in folder.iterdir() if not path.name.startswith(".")) == ["checkpoint-4"]
    assert any(path.name.startswith(".partial-checkpoint-8") for path in folder.iterdir())

    # A new run removes the partial save and resumes from the complete checkpoint.
    monkeypatch.setattr(checkpoint_module, "_fsync_tree", real_fsync_tree)
    result = run_training(config)
    assert not any(path.name.startswith(".partial") for path in folder.iterdir())
    resumed = [entry for entry in result.figures.items() if entry[0] == "steps"]
    assert resumed == [("steps", 8)]


def test_damaged_checkpoint_skipped_on_resume(tinted_zip, tmp_path):
    config = make_config(tinted_zip, tmp_path / "out", tmp_path / "cache", optimization={"max_steps": 8}, schedule={"save_total_limit": 3})
    run_training(config)
    newest = tmp_path / "out" / "checkpoints" / "checkpoint-8" / "optimizer.pt"
    newest.write_bytes(b"damaged")
    store = checkpoint_module.CheckpointStore(config.output, tmp_path / "staging", 3)
    from kubeclip.trainer.data.validation import validate_archive  # noqa: F401  (same import path as the run)

    model = VisionTextDualEncoderModel.from_pretrained(tmp_path / "out" / "model")
    from kubeclip.trainer.loop import build_optimizer, build_scheduler

    optimizer = build_optimizer(model, config.optimization)
    scheduler = build_scheduler(optimizer, config.optimization, 8)
    loaded = store.load_latest(model=model, optimizer=optimizer, scheduler=scheduler, device=torch.device("cpu"))
    assert loaded is not None
    assert loaded.name == "checkpoint-4"


def _trainer_process(config, config_path: Path) -> subprocess.Popen:
    config_path.write_text(json.dumps(config.to_dict()))
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "kubeclip.trainer", "--config", str(config_path)], env=env, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_then_resume_matches_uninterrupted_run(tinted_zip, tmp_path):
    overrides = {"optimization": {"max_steps": 48, "epochs": 12}, "schedule": {"save_steps": 4, "eval_steps": 100, "save_total_limit": 5}}
    straight = make_config(tinted_zip, tmp_path / "straight", tmp_path / "cache", **overrides)
    run_training(straight)

    interrupted = make_config(tinted_zip, tmp_path / "interrupted", tmp_path / "cache", **overrides)
    process = _trainer_process(interrupted, tmp_path / "config.json")
    _wait_for(lambda: (tmp_path / "interrupted" / "checkpoints" / "checkpoint-4").exists() or process.poll() is not None, 180, "the first checkpoint")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == ExitCode.INTERRUPTED, stderr[-2000:]
    saved = [path.name for path in (tmp_path / "interrupted" / "checkpoints").iterdir()]
    assert saved and not (tmp_path / "interrupted" / "model").exists()

    run_training(interrupted)
    expected = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    actual = load_file(tmp_path / "interrupted" / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def _with_broken_lines(source: Path, target: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for member in original.namelist():
            data = original.read(member)
            if member == "captions.jsonl":
                data += b'{"image": "images/missing.jpg", "captions": ["a photo that is not there"]}\nnot json\n'
            copy.writestr(member, data)
    return target


def test_invalid_samples_fail_run_by_default(tinted_zip, tmp_path):
    from kubeclip.trainer.errors import DatasetError

    broken = _with_broken_lines(tinted_zip, tmp_path / "broken.zip")
    config = make_config(broken, tmp_path / "out", tmp_path / "cache", optimization={"max_steps": 8})
    with pytest.raises(DatasetError, match=r"(?s)line 49.*images/missing.jpg.*line 50.*skipInvalidSamples"):
        run_training(config)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_invalid_samples_skipped_when_requested(tinted_zip, tmp_path):
    broken = _with_broken_lines(tinted_zip, tmp_path / "broken.zip")
    config = make_config(broken, tmp_path / "out", tmp_path / "cache", optimization={"max_steps": 8}, data={"skip_invalid_samples": True})
    result = run_training(config)
    skipped = (tmp_path / "out" / "skipped_samples.txt").read_text()
    assert "48 of 50 lines are valid samples, and 2 lines are skipped" in skipped
    assert "images/missing.jpg" in skipped
    assert result.figures["skipped_lines"] == 2
    assert result.figures["train_images"] + result.figures["validation_images"] == 48
