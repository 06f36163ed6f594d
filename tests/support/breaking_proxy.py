"""A TCP proxy on 127.0.0.1 that breaks or corrupts the first connections, for download tests.

Tests point a client at the proxy instead of a test server (moto, fake-gcs-server, the
range HTTP server). The proxy forwards bytes in both directions. It closes the first
``broken_connections`` connections whose response reaches ``cut_after`` bytes at that
offset, or flips the response byte at offset ``corrupt_at`` in them. Connections with
shorter responses are not counted, because some servers (moto) close the connection
after every response, so small metadata requests would use up the count. The proxy
records the request bytes, so a test can check which requests and Range headers the
client sent.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

_REQUEST_HEAD = re.compile(rb"(GET|HEAD|PUT|POST|DELETE|PATCH) (\S+) HTTP/1\.[01]\r\n(.*?)\r\n\r\n", re.DOTALL)
_RECORD_LIMIT = 1024 * 1024
_BUFFER_SIZE = 64 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    """A request line and headers that passed through the proxy. Header names are lower-case."""

    method: str
    target: str
    headers: dict[str, str]


class BreakingProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port`` and breaks connections as configured."""

    def __init__(
        self,
        target_port: int,
        *,
        cut_after: int | None = None,
        corrupt_at: int | None = None,
        broken_connections: int = 1,
    ) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.corrupt_at = corrupt_at
        self.broken_connections = broken_connections
        self.connections = 0
        self.cuts = 0
        self.corruptions = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._recorded: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BreakingProxy:
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in [self._listener, *sockets]:
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> BreakingProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def requests(self) -> list[RecordedRequest]:
        """Return the requests seen so far, parsed from the recorded request bytes.

        The parser assumes requests without a body, which holds for the GET and HEAD
        requests of downloads.
        """
        with self._lock:
            streams = [bytes(stream) for stream in self._recorded]
        found = []
        for stream in streams:
            for match in _REQUEST_HEAD.finditer(stream):
                found.append(_parse_request(match))
        return found

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._start_connection(client)

    def _start_connection(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            # The client then sees a closed connection, as if the server were down.
            _close(client)
            return
        record = bytearray()
        with self._lock:
            self.connections += 1
            self._sockets += [client, upstream]
            self._recorded.append(record)
        self._spawn(self._forward_requests, client, upstream, record)
        self._spawn(self._forward_responses, upstream, client)

    def _forward_requests(self, client: socket.socket, upstream: socket.socket, record: bytearray) -> None:
        while True:
            data = _receive(client)
            if not data:
                break
            with self._lock:
                if len(record) < _RECORD_LIMIT:
                    record.extend(data)
            if not _send(upstream, data):
                break
        _shutdown_write(upstream)

    def _forward_responses(self, upstream: socket.socket, client: socket.socket) -> None:
        sent = 0
        while True:
            data = _receive(upstream)
            if not data:
                break
            corrupts = self.corrupt_at is not None and sent <= self.corrupt_at < sent + len(data)
            if corrupts and self._claim("corruptions"):
                data = _flip_byte(data, self.corrupt_at - sent)
            if self.cut_after is not None and sent + len(data) >= self.cut_after and self._claim("cuts"):
                _send(client, data[: self.cut_after - sent])
                _close(client)
                _close(upstream)
                return
            if not _send(client, data):
                break
            sent += len(data)
        _shutdown_write(client)

    def _claim(self, counter: str) -> bool:
        """Count one more cut or corruption and return True, unless ``broken_connections`` were already broken."""
        with self._lock:
            if getattr(self, counter) >= self.broken_connections:
                return False
            setattr(self, counter, getattr(self, counter) + 1)
            return True


def _parse_request(match: re.Match[bytes]) -> RecordedRequest:
    headers = {}
    for line in match.group(3).decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RecordedRequest(match.group(1).decode(), match.group(2).decode("latin-1"), headers)


def _flip_byte(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0xFF
    return bytes(changed)


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(_BUFFER_SIZE)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
