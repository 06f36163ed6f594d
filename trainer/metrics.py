"""Prometheus metrics of one training run, on an injected registry, and the HTTP endpoint.

Only the training process updates these (never data loader workers), so the values
are right with any number of workers and no multiprocess mode is needed.
"""

from __future__ import annotations

import logging
import re

from kubeclip.trainer.errors import ConfigError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)
_RECALL_NAME = re.compile(r"^(image_to_text|text_to_image)_r(\d+)$")


class TrainerMetrics:
    """The trainer's metrics; dashboards derive samples per second from ``samples_total``."""

    def __init__(self, registry: CollectorRegistry, *, with_gpu: bool = False) -> None:
        self.registry = registry
        self.steps_total = Counter("kubeclip_train_steps", "Optimizer steps taken.", registry=registry)
        self.samples_total = Counter("kubeclip_train_samples", "Image-caption pairs trained on.", registry=registry)
        self.epoch = Gauge("kubeclip_train_epoch", "Epoch in progress, counting from 0, with the fraction done.", registry=registry)
        self.loss = Gauge("kubeclip_train_loss", "Mean contrastive training loss over the last logging window.", registry=registry)
        self.learning_rate = Gauge("kubeclip_train_learning_rate", "Learning rate of the last optimizer step.", registry=registry)
        self.samples_per_second = Gauge(
            "kubeclip_train_samples_per_second", "Training throughput over the last logging window, in pairs per second.", registry=registry
        )
        self.logit_scale = Gauge("kubeclip_train_logit_scale", "Multiplier of the cosine similarities (exp of the learned logit scale).", registry=registry)
        self.eval_loss = Gauge("kubeclip_eval_loss", "Contrastive loss on the validation split at the last evaluation.", registry=registry)
        self.eval_recall = Gauge(
            "kubeclip_eval_recall_ratio",
            "Retrieval recall@k on the validation split at the last evaluation, from 0 to 1.",
            ["direction", "k"],
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "kubeclip_checkpoint_write_duration_seconds",
            "Time to write one checkpoint, in seconds.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        if with_gpu:
            self._add_gpu_metrics(registry)

    def _add_gpu_metrics(self, registry: CollectorRegistry) -> None:
        self.gpu_memory_bytes = Gauge("kubeclip_gpu_memory_used_bytes", "GPU memory allocated by tensors, in bytes (CUDA only).", registry=registry)
        self.gpu_memory_peak_bytes = Gauge(
            "kubeclip_gpu_memory_peak_bytes", "Peak GPU memory allocated by tensors since the run started, in bytes (CUDA only).", registry=registry
        )
        self.gpu_utilization = Gauge(
            "kubeclip_gpu_utilization_ratio", "GPU busy fraction over the last sample period, from 0 to 1 (CUDA with NVML only).", registry=registry
        )

    def record_evaluation(self, loss: float, recalls: dict[str, float]) -> None:
        """Set the validation figures; ``recalls`` maps names like ``image_to_text_r5`` to values."""
        self.eval_loss.set(loss)
        for name, value in recalls.items():
            match = _RECALL_NAME.match(name)
            if match:
                self.eval_recall.labels(direction=match.group(1), k=match.group(2)).set(value)


def serve_metrics(registry: CollectorRegistry, port: int, address: str):
    """Start the HTTP endpoint in a background thread; return the server, or None when port is 0."""
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=address, registry=registry)
    except (OSError, OverflowError) as err:
        raise ConfigError(
            f"cannot serve metrics on {address}:{port} ({err}); pass another --metrics-port, or 0 to turn the endpoint off"
        ) from err
    logger.info("serving metrics", extra={"address": address, "port": server.server_port})
    return server
