"""Step timing shared by both sides: steady-state throughput and a per-step phase breakdown.

A step is measured from the end of the previous step to the end of this one, so it
includes waiting for the batch, the forward and backward passes, the optimizer and
any bookkeeping of the loop. The phases come from hooks on the model's forward call
and global optimizer step hooks, so neither side's code is changed to measure them.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

#: Phase names in step order. ``data`` runs from the previous step's end to the
#: forward call, so it also includes loop bookkeeping (callbacks, moving the batch).
#: ``backward`` runs from the end of forward to the optimizer step, so it also
#: includes the loss, the finiteness check and gradient clipping.
PHASES = ("data", "forward", "backward", "optimizer", "other")
#: Parts of ``forward`` spent in each encoder of a VisionTextDualEncoderModel. The
#: rest of ``forward`` is the projections and the model's own loss, if it computes one.
ENCODER_PHASES = ("vision_forward", "text_forward")
_ENCODER_ATTRIBUTES = {"vision_forward": "vision_model", "text_forward": "text_model"}


@dataclasses.dataclass(frozen=True)
class StepTiming:
    """Throughput over the steps after warm-up, and where their time went."""

    samples_per_second: float
    seconds_per_step: float
    #: Mean seconds per measured step for each of PHASES and ENCODER_PHASES; empty when no hooks were attached.
    phase_seconds: dict[str, float]
    #: Mean padded caption length (tokens) of the measured steps' batches; None without hooks.
    mean_text_tokens: float | None


class StepTimer:
    """Records the end of every training step and, once attached to a model, its phases.

    With ``synchronize`` (needed on CUDA, where kernels run asynchronously), each
    timestamp waits for the device first. That removes the overlap of host and
    device work, so timed runs on CUDA take step ends only and leave phases to a
    separate run.
    """

    def __init__(self, *, synchronize: bool) -> None:
        self.synchronize = synchronize
        self.step_ends: list[float] = []
        self.step_phases: list[dict[str, float]] = []
        self.text_tokens: list[int] = []
        self._start = 0.0
        self._marks: dict[str, float] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def now(self) -> float:
        if self.synchronize:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self._start = self.now()

    def attach(self, model: torch.nn.Module) -> None:
        """Install the phase hooks. Call ``detach`` afterwards, because the optimizer hooks are global."""
        self._handles = [
            model.register_forward_pre_hook(self._forward_started, with_kwargs=True),
            model.register_forward_hook(self._forward_ended),
            register_optimizer_step_pre_hook(self._optimizer_started),
            register_optimizer_step_post_hook(self._optimizer_ended),
        ]
        for phase, attribute in _ENCODER_ATTRIBUTES.items():
            encoder = getattr(model, attribute, None)
            if isinstance(encoder, torch.nn.Module):
                self._handles.append(encoder.register_forward_pre_hook(self._mark_hook(f"{phase}_start")))
                self._handles.append(encoder.register_forward_hook(self._mark_hook(f"{phase}_end")))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def step_ended(self) -> None:
        ended = self.now()
        previous = self.step_ends[-1] if self.step_ends else self._start
        marks = self._marks
        if {"forward_start", "forward_end", "optimizer_start", "optimizer_end"} <= marks.keys():
            self.step_phases.append(
                {
                    "data": marks["forward_start"] - previous,
                    "forward": marks["forward_end"] - marks["forward_start"],
                    "backward": marks["optimizer_start"] - marks["forward_end"],
                    "optimizer": marks["optimizer_end"] - marks["optimizer_start"],
                    "other": ended - marks["optimizer_end"],
                }
            )
            for phase in ENCODER_PHASES:
                if f"{phase}_start" in marks and f"{phase}_end" in marks:
                    self.step_phases[-1][phase] = marks[f"{phase}_end"] - marks[f"{phase}_start"]
        self._marks = {}
        self.step_ends.append(ended)

    def timing(self, warmup_steps: int, batch_size: int) -> StepTiming:
        """Summarise the steps after the first ``warmup_steps``.

        Raises:
            ValueError: fewer than ``warmup_steps + 1`` steps were recorded.
        """
        measured = len(self.step_ends) - warmup_steps
        if measured < 1:
            raise ValueError(f"recorded {len(self.step_ends)} steps, but at least {warmup_steps + 1} are needed to skip {warmup_steps} warm-up steps")
        window_start = self.step_ends[warmup_steps - 1] if warmup_steps > 0 else self._start
        seconds = self.step_ends[-1] - window_start
        phases: dict[str, float] = {}
        measured_phases = self.step_phases[warmup_steps:] if len(self.step_phases) == len(self.step_ends) else []
        if measured_phases:
            phases = {name: statistics.fmean(step[name] for step in measured_phases) for name in (*PHASES, *ENCODER_PHASES) if name in measured_phases[0]}
        measured_tokens = self.text_tokens[warmup_steps:]
        return StepTiming(
            samples_per_second=measured * batch_size / seconds,
            seconds_per_step=seconds / measured,
            phase_seconds=phases,
            mean_text_tokens=statistics.fmean(measured_tokens) if measured_tokens else None,
        )

    def _forward_started(self, _module, args, kwargs) -> None:
        self._marks["forward_start"] = self.now()
        input_ids = kwargs.get("input_ids")
        if input_ids is not None:
            self.text_tokens.append(int(input_ids.shape[1]))

    def _mark_hook(self, mark: str):
        def record(*_hook_arguments) -> None:
            self._marks[mark] = self.now()

        return record

    def _forward_ended(self, _module, _args, _output) -> None:
        self._marks["forward_end"] = self.now()

    def _optimizer_started(self, _optimizer, _args, _kwargs) -> None:
        self._marks["optimizer_start"] = self.now()

    def _optimizer_ended(self, _optimizer, _args, _kwargs) -> None:
        self._marks["optimizer_end"] = self.now()


def time_batches(loader, *, batches: int, warmup_batches: int, batch_size: int, start_epoch=None) -> float:
    """Draw ``warmup_batches + batches`` batches, starting a new epoch when one runs out.

    ``start_epoch(epoch)`` is called before each epoch's iterator is made, so a
    loader that draws new data per epoch gets the epoch number.
    Returns samples per second over the batches after warm-up.

    Raises:
        ValueError: an epoch yields no batch, as when the batch size exceeds the dataset.
    """
    drawn = 0
    epoch = 0
    window_start = time.perf_counter()
    while drawn < warmup_batches + batches:
        if start_epoch is not None:
            start_epoch(epoch)
        drawn_before = drawn
        for _batch in loader:
            drawn += 1
            if drawn == warmup_batches:
                window_start = time.perf_counter()
            if drawn == warmup_batches + batches:
                break
        if drawn == drawn_before:
            raise ValueError(f"the loader yielded no batch of {batch_size} samples in epoch {epoch}")
        epoch += 1
    return batches * batch_size / (time.perf_counter() - window_start)
