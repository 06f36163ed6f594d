"""A TCP proxy on 127.0.0.1 whose open connections can be made to go silent.

``stall()`` stops forwarding bytes on every connection open at that moment, in both
directions, without closing them: to the client it looks like a watch on which no
event ever arrives again, the failure that a dead load balancer or a half-open TCP
connection produces. Connections opened later are forwarded normally, so a client that
notices the silence and reconnects recovers.
"""

from __future__ import annotations

import socket
import threading

_BUFFER_SIZE = 64 * 1024


class StallingProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.stalled_connections = 0

    def __enter__(self) -> StallingProxy:
        threading.Thread(target=self._accept_loop, name="stalling-proxy", daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        with self._lock:
            connections = list(self._connections)
        for client, upstream, _ in connections:
            _close(client)
            _close(upstream)
        self._listener.close()

    def stall(self) -> int:
        """Silence every open connection; return how many were silenced."""
        with self._lock:
            for _, _, stalled in self._connections:
                stalled.set()
            self.stalled_connections = len(self._connections)
            return self.stalled_connections

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            stalled = threading.Event()
            with self._lock:
                self._connections.append((client, upstream, stalled))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._forward, args=(source, target, stalled), daemon=True).start()

    def _forward(self, source: socket.socket, target: socket.socket, stalled: threading.Event) -> None:
        while not self._stopping.is_set():
            try:
                data = source.recv(_BUFFER_SIZE)
            except OSError:
                return
            if not data:
                _close(target)
                return
            if stalled.is_set():
                # Swallow the bytes and never answer: the connection stays open and silent.
                continue
            try:
                target.sendall(data)
            except OSError:
                return


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
