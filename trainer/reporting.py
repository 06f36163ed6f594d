"""Progress reporting: structured logs, the terminal progress bar, metrics and the history file.

The training loop calls ``Reporter`` at each logging step, evaluation and checkpoint.
``Reporter`` fans the figures out to the log, Prometheus, ``metrics.jsonl`` and any
``ReportSink`` (such as the progress ConfigMap of a pod), so the loop contains no
reporting code of its own.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from kubeclip.trainer.config import JobIdentity
from kubeclip.trainer.metrics import TrainerMetrics

logger = logging.getLogger(__name__)

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job, and the ``extra`` fields."""

    def __init__(self, job: JobIdentity) -> None:
        super().__init__()
        self.job = {"namespace": job.namespace, "name": job.name}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job": self.job,
        }
        payload.update({key: value for key, value in vars(record).items() if key not in _RESERVED})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL message key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={_format_value(value)}" for key, value in vars(record).items() if key not in _RESERVED)
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} {record.getMessage()}"
        line = f"{line}  {fields}" if fields else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class _ProgressBarAwareHandler(logging.StreamHandler):
    """Writes records through ``tqdm.write``, which clears a progress bar first and redraws it after."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def configure_logging(job: JobIdentity, *, json_lines: bool | None = None, level: int = logging.INFO) -> None:
    """Send ``kubeclip`` logs to stderr: JSON lines unless stderr is a terminal."""
    use_json = not sys.stderr.isatty() if json_lines is None else json_lines
    handler = logging.StreamHandler(sys.stderr) if use_json else _ProgressBarAwareHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter(job) if use_json else ConsoleFormatter())
    root = logging.getLogger("kubeclip")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class ProgressBar:
    """A tqdm bar over optimizer steps, shown only when stderr is a terminal."""

    def __init__(self, enabled: bool, total_steps: int, initial_step: int) -> None:
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class ReportSink(Protocol):
    """A further destination of the Reporter's figures, such as ``kubeclip.trainer.progress.ProgressReport``.

    Sinks are called on the training thread, so they must return at once.
    """

    def begin(self, *, total_steps: int, history: list[dict[str, Any]], resumed_checkpoint: str | None) -> None:
        """Start the run: its length, the history of a resumed run and the checkpoint it resumed from."""

    def receive(self, entry: dict[str, Any]) -> None:
        """Take one history entry (kind train, eval or checkpoint), or ``{"kind": "step", "step": N}`` after each step."""


class Reporter:
    """Receives figures from the loop and records them in logs, metrics, the history and the sinks."""

    def __init__(
        self,
        metrics: TrainerMetrics,
        history_path: Path,
        *,
        total_steps: int,
        steps_per_epoch: int,
        clock: Callable[[], float] = time.monotonic,
        sinks: Sequence[ReportSink] = (),
    ) -> None:
        self.metrics = metrics
        self.history_path = history_path
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.clock = clock
        self.sinks = tuple(sinks)
        self._failed_sinks: set[int] = set()
        self.history: list[dict[str, Any]] = []
        self._window_start = clock()
        self._window_losses: list[float] = []
        self._window_samples = 0

    def restore(self, history: list[dict[str, Any]], *, resumed_checkpoint: str | None = None) -> None:
        """Continue the history of a resumed run (empty for a new one), and start the sinks."""
        self.history = list(history)
        self._write_history()
        for sink in self.sinks:
            self._call_sink(sink, lambda: sink.begin(total_steps=self.total_steps, history=self.history, resumed_checkpoint=resumed_checkpoint))

    def record_step(self, *, step: int, samples: int, loss: float, learning_rate: float, logit_scale: float) -> None:
        """Count one optimizer step; called after every step."""
        self.metrics.steps_total.inc()
        self.metrics.samples_total.inc(samples)
        self.metrics.learning_rate.set(learning_rate)
        self.metrics.logit_scale.set(logit_scale)
        self.metrics.epoch.set(step / self.steps_per_epoch)
        self._window_losses.append(loss)
        self._window_samples += samples
        self._notify({"kind": "step", "step": step})

    def log_progress(self, *, step: int, epoch: int, learning_rate: float) -> dict[str, Any]:
        """Close the logging window: log and record mean loss and throughput since the last call."""
        elapsed = max(self.clock() - self._window_start, 1e-9)
        mean_loss = sum(self._window_losses) / max(len(self._window_losses), 1)
        samples_per_second = self._window_samples / elapsed
        remaining = (self.total_steps - step) * elapsed / max(len(self._window_losses), 1)
        entry = {
            "kind": "train",
            "step": step,
            "epoch": epoch,
            "loss": mean_loss,
            "learning_rate": learning_rate,
            "samples_per_second": samples_per_second,
            "estimated_remaining_seconds": round(remaining, 1),
        }
        self.metrics.loss.set(mean_loss)
        self.metrics.samples_per_second.set(samples_per_second)
        self._append(entry)
        logger.info("training progress", extra={key: value for key, value in entry.items() if key != "kind"} | {"total_steps": self.total_steps})
        self._window_start, self._window_losses, self._window_samples = self.clock(), [], 0
        return entry

    def log_evaluation(self, *, step: int, epoch: int, split: str, results: dict[str, float]) -> None:
        """Record an evaluation; only the validation split feeds the eval metrics."""
        entry = {"kind": "eval", "split": split, "step": step, "epoch": epoch, **results}
        if split == "validation":
            self.metrics.record_evaluation(results["loss"], {key: value for key, value in results.items() if "_r" in key})
        self._append(entry)
        logger.info("evaluation", extra={key: value for key, value in entry.items() if key != "kind"})

    def log_checkpoint(self, *, step: int, name: str, seconds: float) -> None:
        self.metrics.checkpoint_seconds.observe(seconds)
        self._append({"kind": "checkpoint", "step": step, "name": name, "seconds": round(seconds, 3)})
        logger.info("checkpoint saved", extra={"step": step, "checkpoint": name, "seconds": round(seconds, 2)})

    def record_gpu(self, device) -> None:
        """Update GPU memory and utilisation gauges; no-op off CUDA."""
        import torch

        if device.type != "cuda":
            return
        self.metrics.gpu_memory_bytes.set(torch.cuda.memory_allocated(device))
        self.metrics.gpu_memory_peak_bytes.set(torch.cuda.max_memory_allocated(device))
        try:
            self.metrics.gpu_utilization.set(torch.cuda.utilization(device) / 100.0)
        except Exception:  # NVML missing or unsupported: leave the gauge unset.
            pass

    def _append(self, entry: dict[str, Any]) -> None:
        entry = {key: (None if isinstance(value, float) and not math.isfinite(value) else value) for key, value in entry.items()}
        self.history.append(entry)
        with self.history_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        self._notify(entry)

    def _notify(self, entry: dict[str, Any]) -> None:
        for sink in self.sinks:
            self._call_sink(sink, lambda: sink.receive(entry))

    def _call_sink(self, sink: ReportSink, call: Callable[[], None]) -> None:
        """Run ``call``; a failing sink is logged once and never stops training."""
        try:
            call()
        except Exception:
            if id(sink) not in self._failed_sinks:
                self._failed_sinks.add(id(sink))
                logger.warning("a report sink failed; training goes on, and later failures of this sink are not logged", extra={"sink": type(sink).__name__}, exc_info=True)

    def _write_history(self) -> None:
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.history_path.with_suffix(".partial")
        partial.write_text("".join(json.dumps(entry) + "\n" for entry in self.history), encoding="utf-8")
        partial.replace(self.history_path)
