"""Checkpoints: written completely before they count, rotated, found again on restart.

Called by the training loop. A checkpoint is the folder ``checkpoints/checkpoint-STEP``
holding the model weights, optimizer, scheduler and RNG states and
``trainer_state.json`` (step, epoch, position in the epoch, metric history, config,
and a SHA-256 of every other file).

On a local disk the folder is built under a temporary name and renamed into place,
so a crash mid-save leaves no folder that looks complete. In an object store, where
there is no rename, ``trainer_state.json`` is uploaded last and marks the checkpoint
complete. A checkpoint without it, or whose files do not match their checksums, is
skipped on resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from kubeclip.trainer.config import OutputConfig
from kubeclip.trainer.errors import ConfigError, TrainerError
from kubeclip.trainer.storage import paths, remote

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_PAYLOAD_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt")


@dataclasses.dataclass
class TrainingPosition:
    """The position of training, enough to continue exactly where it stopped."""

    #: Optimizer steps taken.
    step: int = 0
    #: Epoch in progress (0-based).
    epoch: int = 0
    #: Training samples of the current epoch's permutation already consumed.
    epoch_sample_index: int = 0
    #: Training samples seen over the whole run.
    samples_seen: int = 0


@dataclasses.dataclass
class LoadedCheckpoint:
    position: TrainingPosition
    history: list[dict[str, Any]]
    name: str
    #: The trainer config the checkpoint was written with.
    config: dict[str, Any]


class CheckpointStore:
    """Saves, rotates and loads checkpoints under an output location."""

    def __init__(self, output: OutputConfig, staging_dir: Path, save_total_limit: int) -> None:
        self.output = output
        self.is_local = paths.is_local(output.location)
        self.local_root = paths.local_path(output.location) / "checkpoints" if self.is_local else staging_dir / "checkpoints"
        self.remote_root = None if self.is_local else paths.join(output.location, "checkpoints")
        self.save_total_limit = save_total_limit

    # -- saving ---------------------------------------------------------------------

    def save(self, *, model: torch.nn.Module, optimizer, scheduler, position: TrainingPosition, history: list[dict[str, Any]], config: dict[str, Any]) -> str:
        """Write a complete checkpoint for ``position.step`` and delete the oldest beyond the limit."""
        name = f"checkpoint-{position.step}"
        _require_finite_weights(model, position.step)
        self.local_root.mkdir(parents=True, exist_ok=True)
        partial = self.local_root / f".partial-{name}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()

        # Payload files first, then the state file that names their checksums.
        _write_payload(partial, model, optimizer, scheduler)
        state = {
            "position": dataclasses.asdict(position),
            "history": history,
            "config": config,
            "checksums": {file: file_sha256(partial / file) for file in _PAYLOAD_FILES},
        }
        _write_json(partial / STATE_FILE, state)
        _fsync_tree(partial)

        # The rename is what makes the checkpoint exist.
        final = self.local_root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        _fsync_dir(self.local_root)
        if self.remote_root is not None:
            self._upload(final, name)
        self._rotate()
        return name

    def _upload(self, folder: Path, name: str) -> None:
        target = paths.join(self.remote_root, name)
        for file in _PAYLOAD_FILES:
            remote.upload_file(folder / file, paths.join(target, file), region=self.output.region, profile=self.output.profile)
        remote.upload_file(folder / STATE_FILE, paths.join(target, STATE_FILE), region=self.output.region, profile=self.output.profile)

    def _rotate(self) -> None:
        names = self.list_complete()
        for name in names[: max(0, len(names) - self.save_total_limit)]:
            logger.info("deleting old checkpoint", extra={"checkpoint": name})
            if self.remote_root is not None:
                remote.delete_tree(paths.join(self.remote_root, name), region=self.output.region, profile=self.output.profile)
            shutil.rmtree(self.local_root / name, ignore_errors=True)

    # -- loading --------------------------------------------------------------------

    def list_complete(self) -> list[str]:
        """Names of checkpoints that have a state file, oldest first."""
        if self.remote_root is None:
            children = [path.name for path in self.local_root.iterdir()] if self.local_root.is_dir() else []
            complete = [name for name in children if _NAME.match(name) and (self.local_root / name / STATE_FILE).exists()]
        else:
            children = remote.list_children(self.remote_root, region=self.output.region, profile=self.output.profile)
            complete = [
                name
                for name in children
                if _NAME.match(name)
                and remote.exists(paths.join(self.remote_root, name, STATE_FILE), region=self.output.region, profile=self.output.profile)
            ]
        return sorted(complete, key=lambda name: int(_NAME.match(name).group(1)))

    def remove_partial_saves(self) -> None:
        """Delete folders of saves that a crash interrupted."""
        if self.local_root.is_dir():
            for path in self.local_root.glob(".partial-checkpoint-*"):
                logger.warning("removing interrupted checkpoint save", extra={"path": str(path)})
                shutil.rmtree(path, ignore_errors=True)

    def load_latest(self, *, model: torch.nn.Module, optimizer, scheduler, device: torch.device) -> LoadedCheckpoint | None:
        """Restore the newest checkpoint whose files are intact; None if there is none."""
        for name in reversed(self.list_complete()):
            folder = self._fetch(name)
            state = _read_verified_state(folder)
            if state is None:
                logger.warning("skipping damaged checkpoint", extra={"checkpoint": name})
                continue
            try:
                _load_payload(folder, model, optimizer, scheduler, device)
            except (RuntimeError, ValueError, KeyError) as err:
                raise ConfigError(
                    f"checkpoint {name} in {self.output.location} belongs to a different model or job and cannot be loaded "
                    f"({str(err).splitlines()[0]}); choose another output location, or delete its checkpoints folder to start over"
                ) from err
            logger.info("resuming from checkpoint", extra={"checkpoint": name, "step": state["position"]["step"]})
            return LoadedCheckpoint(TrainingPosition(**state["position"]), state["history"], name, state.get("config", {}))
        return None

    def _fetch(self, name: str) -> Path:
        folder = self.local_root / name
        if self.remote_root is not None:
            shutil.rmtree(folder, ignore_errors=True)
            remote.download_directory(paths.join(self.remote_root, name), folder, region=self.output.region, profile=self.output.profile)
        return folder


def _require_finite_weights(model: torch.nn.Module, step: int) -> None:
    """Refuse to save weights that hold NaN or infinity: a run resumed from them could never recover."""
    broken = [name for name, parameter in model.named_parameters() if not torch.isfinite(parameter).all()]
    if broken:
        raise TrainerError(
            f"{len(broken)} weight tensors (such as {broken[0]}) became NaN or infinite at step {step}, so no checkpoint "
            "was saved there; lower spec.training.learningRate and rerun, which resumes from the last good checkpoint"
        )


def make_readable(path: Path) -> None:
    """Give a file the permissions the umask allows (safetensors writes weights as 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _write_payload(folder: Path, model: torch.nn.Module, optimizer, scheduler) -> None:
    save_model(model, str(folder / "model.safetensors"))
    make_readable(folder / "model.safetensors")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    torch.save(capture_rng_state(), folder / "rng.pt")


def _load_payload(folder: Path, model: torch.nn.Module, optimizer, scheduler, device: torch.device) -> None:
    load_model(model, str(folder / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    restore_rng_state(torch.load(folder / "rng.pt", weights_only=False))


def _read_verified_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        intact = all(file_sha256(folder / file) == digest for file, digest in state["checksums"].items())
    except (OSError, ValueError, KeyError):
        return None
    return state if intact else None


def capture_rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
