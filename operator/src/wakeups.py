"""Wake the Kopf daemon of one job from any thread, when something about the job changed.

Informer threads call ``wake_for_object``; the daemon of each job waits on the event that
``register`` returned.
"""

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
        """Create the event of a job's daemon; call it from the daemon's event loop."""
        event = asyncio.Event()
        with self._lock:
            self._events[uid] = (asyncio.get_running_loop(), event)
        return event

    def unregister(self, uid: str, event: asyncio.Event | None = None) -> None:
        """Drop a job's event; with ``event``, only if it is still the registered one, so an old daemon cannot drop a new one's."""
        with self._lock:
            entry = self._events.get(uid)
            if entry is not None and (event is None or entry[1] is event):
                del self._events[uid]

    def wake(self, uid: str | None) -> None:
        """Wake the daemon of the job with ``uid``, if it has one."""
        if not uid:
            return
        with self._lock:
            entry = self._events.get(uid)
        if entry is None:
            return
        loop, event = entry
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:
            # The loop is closed: the operator is stopping, and no daemon waits any more.
            return

    def wake_for_object(self, item: dict[str, Any]) -> None:
        """Wake the job that a trainer object belongs to; the informers' change callback."""
        self.wake((item.get("metadata", {}).get("labels") or {}).get(JOB_UID_LABEL))
