"""Start and stop the processes of a development cluster.

``kubeclip.dev.cluster`` starts each component with ``start_process`` and stores the
returned ``ProcessRecord`` in the cluster's state file, so a later ``down`` from another
process can stop it. Each component runs in its own session, so its process group ID
equals its PID and ``stop_process`` signals the whole group (children included). A record
also stores the process's start time from /proc, so a PID that the kernel has reused for
an unrelated process is never signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds a component gets to exit after SIGTERM before it gets SIGKILL.
TERMINATE_TIMEOUT_SECONDS = 10.0
#: Seconds to wait for the kernel to remove a process after SIGKILL.
KILL_TIMEOUT_SECONDS = 5.0
_POLL_INTERVAL_SECONDS = 0.05


class ProcessStopError(RuntimeError):
    """A process survived SIGKILL."""


@dataclass(frozen=True)
class ProcessRecord:
    """A started component: enough to find it again, and to tell it from a process that reused its PID."""

    name: str
    pid: int
    #: Start time in clock ticks since boot, field 22 of /proc/PID/stat.
    start_ticks: int
    log_path: str
    command: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "command": list(self.command)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(data["name"], int(data["pid"]), int(data["start_ticks"]), data["log_path"], tuple(data["command"]))


def start_process(name: str, command: list[str], log_path: Path, environment: dict[str, str] | None = None) -> ProcessRecord:
    """Start ``command`` in a new session with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(environment or {})},
            start_new_session=True,
        )
    start_ticks = read_start_ticks(process.pid)
    if start_ticks is None:
        raise RuntimeError(f"{name} exited at once; see its log {log_path}")
    logger.info("started %s, PID %d, log %s", name, process.pid, log_path)
    return ProcessRecord(name, process.pid, start_ticks, str(log_path), tuple(command))


def read_start_ticks(pid: int) -> int | None:
    """Return the start time of process ``pid`` in clock ticks since boot, or None when no live process has that PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces, so split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], int(fields[19])
    return None if state in ("Z", "X") else start_ticks


def is_running(record: ProcessRecord) -> bool:
    """Return whether the process of ``record`` is alive and is the same process that was started."""
    _reap(record.pid)
    return read_start_ticks(record.pid) == record.start_ticks


def stop_process(record: ProcessRecord) -> None:
    """Stop the process group of ``record``: SIGTERM, wait, then SIGKILL.

    Raises:
        ProcessStopError: the process is still alive after SIGKILL.
    """
    if not is_running(record):
        logger.info("%s (PID %d) is not running", record.name, record.pid)
        return
    _signal_group(record, signal.SIGTERM)
    if _wait_for_exit(record, TERMINATE_TIMEOUT_SECONDS):
        logger.info("stopped %s (PID %d)", record.name, record.pid)
        return
    logger.warning("%s (PID %d) ignored SIGTERM for %.0f s; sending SIGKILL", record.name, record.pid, TERMINATE_TIMEOUT_SECONDS)
    _signal_group(record, signal.SIGKILL)
    if not _wait_for_exit(record, KILL_TIMEOUT_SECONDS):
        raise ProcessStopError(f"{record.name} (PID {record.pid}) is still running after SIGKILL; check it with `ps -o pid,stat,cmd -p {record.pid}`")


def _signal_group(record: ProcessRecord, signal_number: signal.Signals) -> None:
    # start_new_session made the component a group leader, so its PGID is its PID.
    try:
        os.killpg(record.pid, signal_number)
    except ProcessLookupError:
        pass


def _wait_for_exit(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(record):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_INTERVAL_SECONDS)
    return True


def _reap(pid: int) -> None:
    # A component started by this Python process stays a zombie until it is waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
