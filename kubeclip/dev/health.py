"""HTTPS health probes of the components, and polling with a deadline.

``kubeclip.dev.cluster`` uses ``probe`` to wait for each component after starting it and
to report health in ``status``. Every probe goes to 127.0.0.1 and verifies the server
certificate against the cluster CA.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_POLL_INTERVAL_SECONDS = 0.2
_PROBE_TIMEOUT_SECONDS = 3.0


class WaitTimeout(TimeoutError):
    """A condition did not hold before its deadline."""


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one health request: HTTP 200 or not, and the body or error text."""

    url: str
    healthy: bool
    detail: str


def client_ssl_context(ca_file: Path, certificate_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """Return a TLS context that trusts only ``ca_file`` and, if given, presents a client certificate."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if certificate_file is not None:
        context.load_cert_chain(str(certificate_file), str(key_file) if key_file else None)
    return context


def probe(url: str, context: ssl.SSLContext | None = None) -> ProbeResult:
    """GET ``url`` once; healthy means HTTP 200. Network and TLS errors become an unhealthy result."""
    try:
        with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT_SECONDS, context=context) as response:
            return ProbeResult(url, response.status == 200, response.read(200).decode(errors="replace").strip())
    except urllib.error.HTTPError as error:
        return ProbeResult(url, False, f"HTTP {error.code}: {error.read(300).decode(errors='replace').strip()}")
    except OSError as error:  # URLError, refused connections, timeouts and TLS errors
        return ProbeResult(url, False, str(getattr(error, "reason", error)))


def wait_until(condition: Callable[[], bool], *, timeout: float, description: str) -> None:
    """Poll ``condition`` until it returns True.

    Raises:
        WaitTimeout: ``timeout`` seconds passed first; the message names ``description``.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting until {description}")
        time.sleep(_POLL_INTERVAL_SECONDS)
