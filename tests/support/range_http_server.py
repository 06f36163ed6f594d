"""An HTTP/1.1 file server on 127.0.0.1 with Range, If-Range and ETag support, for download tests.

``http.server.SimpleHTTPRequestHandler`` ignores Range headers, so the HTTP download
tests use this server instead. Files live in memory, and a test replaces one to simulate
an object that changed. The server records each request's method, path, Range,
If-Range and Authorization headers.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from dataclasses import dataclass

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class ServedRequest:
    method: str
    path: str
    range: str | None
    if_range: str | None
    authorization: str | None


class RangeHTTPServer:
    """Serves ``files`` (path to bytes) with strong ETags (quoted MD5 of the content)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.served: list[ServedRequest] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def put(self, path: str, data: bytes) -> None:
        with self._lock:
            self.files[path] = data

    def get(self, path: str) -> bytes | None:
        with self._lock:
            return self.files.get(path)

    def record(self, request: ServedRequest) -> None:
        with self._lock:
            self.served.append(request)

    def start(self) -> RangeHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def _handler_class(server: RangeHTTPServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self._serve(send_body=False)

        def do_GET(self) -> None:
            self._serve(send_body=True)

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                # Tests cut connections through a proxy on purpose.
                return

        def log_message(self, format: str, *args: object) -> None:
            # Keep pytest's captured output free of one line per request.
            return

        def _serve(self, *, send_body: bool) -> None:
            request = ServedRequest(
                self.command,
                self.path,
                self.headers.get("Range"),
                self.headers.get("If-Range"),
                self.headers.get("Authorization"),
            )
            server.record(request)
            data = server.get(self.path)
            if data is None:
                self._send_status(404)
                return
            start, end = self._requested_range(data, request)
            if start >= len(data) and request.range is not None and start > 0:
                self._send_status(416)
                return
            self.send_response(206 if (start, end) != (0, len(data)) else 200)
            self.send_header("Content-Length", str(end - start))
            self.send_header("ETag", etag_of(data))
            self.send_header("Accept-Ranges", "bytes")
            if (start, end) != (0, len(data)):
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self.end_headers()
            if send_body:
                self.wfile.write(data[start:end])

        def _requested_range(self, data: bytes, request: ServedRequest) -> tuple[int, int]:
            match = _RANGE.fullmatch(request.range or "")
            if match is None or (request.if_range is not None and request.if_range != etag_of(data)):
                return 0, len(data)
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else len(data)
            return start, min(end, len(data))

        def _send_status(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
