"""Wake the Kopf daemon of one job from any thread, when something about the job changed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kubeclip.builders.naming import JOB_UID_LABEL


class Wakeups:
    """One asyncio.Event per job UID, set from informer threads through the event loop."""

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self._lock = threading.Lock()

    def register(self, uid: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._events[uid] = (asyncio.get_running_loop(), event)
        return event

    def unregister(self, uid: str) -> None:
        with self._lock:
            self._events.pop(uid, None)

    def wake(self, uid: str | None) -> None:
        if not uid:
            return
        with self._lock:
            entry = self._events.get(uid)
        if entry is not None:
            loop, event = entry
            loop.call_soon_threadsafe(event.set)

    def wake_for_object(self, item: dict[str, Any]) -> None:
        """Informer callback: wake the job that a trainer object belongs to."""
        self.wake((item.get("metadata", {}).get("labels") or {}).get(JOB_UID_LABEL))
