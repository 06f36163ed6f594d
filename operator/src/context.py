"""Everything one operator process shares between its handlers: clients, caches, metrics."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kubernetes import client

from kubeclip.operator.clusters import ClusterRegistry
from kubeclip.operator.events import EventRecorder
from kubeclip.operator.metrics import OperatorMetrics
from kubeclip.operator.reconciler import Reconciler
from kubeclip.operator.settings import OperatorSettings
from kubeclip.operator.wakeups import Wakeups

#: Threads that run reconciliation passes; each pass mostly waits on the API server.
WORKER_THREADS = 16


@dataclass
class OperatorContext:
    """The shared objects, created once at startup and handed to the handlers through Kopf's memo."""

    settings: OperatorSettings
    home_client: client.ApiClient
    metrics: OperatorMetrics
    wakeups: Wakeups
    registry: ClusterRegistry
    reconciler: Reconciler
    executor: ThreadPoolExecutor
    #: Tasks started at startup, such as the ClipCluster probe loop; cancelled by ``close``.
    background_tasks: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    def create(cls, settings: OperatorSettings, home_client: client.ApiClient, metrics: OperatorMetrics | None = None) -> OperatorContext:
        """Wire the context for ``home_client``; a test may pass its own ``metrics``."""
        metrics = metrics or OperatorMetrics()
        wakeups = Wakeups()
        registry = ClusterRegistry(
            home_client, wakeups.wake_for_object, watch_timeout_seconds=settings.watch_timeout_seconds, sync_timeout=settings.cache_sync_timeout_seconds
        )
        reconciler = Reconciler(home_client, settings, registry, EventRecorder(home_client), metrics)
        executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="reconcile")
        return cls(settings, home_client, metrics, wakeups, registry, reconciler, executor)

    def close(self) -> None:
        """Stop every cluster connection and close ``home_client``.

        The executor is the event loop's default one, and ``asyncio.run`` shuts it down.
        """
        for task in self.background_tasks:
            task.cancel()
        self.registry.stop()
        # Closing twice is harmless, and the home connection may already have closed it.
        self.home_client.close()
