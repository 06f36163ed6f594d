"""Guards around the output folder and a resumed run's hyperparameters.

Called by ``kubeclip.trainer.run``. Only one run at a time may write to an output
folder. A run that resumes from a checkpoint trains with the settings of its own
config, not the ones stored in the checkpoint's optimizer and scheduler state.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from kubeclip.trainer.config import TrainerConfig
from kubeclip.trainer.errors import ConfigError, StorageError

logger = logging.getLogger(__name__)

LOCK_FILE = ".kubeclip.lock"


@contextlib.contextmanager
def exclusive_output(folder: Path) -> Iterator[Path]:
    """Create ``folder`` and hold an exclusive lock on it for the duration of the block.

    Raises:
        StorageError: the folder cannot be created or written.
        ConfigError: another run holds the lock.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / LOCK_FILE).open("a+", encoding="utf-8")
    except OSError as err:
        raise StorageError(f"cannot write to the output folder {folder}: {err.strerror or err}; choose another output location") from err
    with handle:
        _lock(handle, folder)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock(handle, folder: Path) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        raise ConfigError(
            f"the output folder {folder} is in use by another kubeclip run (process {owner}); wait for it to finish or choose another output location"
        ) from err


def apply_current_hyperparameters(optimizer: torch.optim.Optimizer, scheduler, config: TrainerConfig, saved_config: dict[str, Any]) -> None:
    """Make a resumed run use this config's learning rate and weight decay, and log what changed."""
    changed = _changed_optimization_settings(config, saved_config)
    if changed:
        logger.warning("settings differ from the checkpoint; training continues with the new values", extra={"changed": changed})
    decays = [config.optimization.weight_decay, 0.0]
    for group, weight_decay in zip(optimizer.param_groups, decays):
        group["initial_lr"] = config.optimization.learning_rate
        group["weight_decay"] = weight_decay
    scheduler.base_lrs = [config.optimization.learning_rate for _ in optimizer.param_groups]
    step = scheduler.last_epoch
    for group, multiplier in zip(optimizer.param_groups, (fn(step) for fn in scheduler.lr_lambdas)):
        group["lr"] = config.optimization.learning_rate * multiplier
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _changed_optimization_settings(config: TrainerConfig, saved_config: dict[str, Any]) -> dict[str, list[Any]]:
    saved = saved_config.get("optimization", {})
    current = config.to_dict()["optimization"]
    return {name: [saved.get(name), value] for name, value in current.items() if name in saved and saved[name] != value}
