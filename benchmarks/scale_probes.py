"""Measurements for the scale benchmark: process memory and CPU from /proc, cheap list calls, the operator's /metrics.

``operator_scale.py`` polls the API server with these list calls every second, so they
ask for as little as answers the question: object metadata only, or the server-side
table that ``kubectl get`` prints. A full list of 1,000 ClipTrainingJobs with their status
is several megabytes, which the API server would encode every second on the same
2 cores that the operator runs on.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time of process ``pid`` so far, from fields 14 and 15 of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may contain spaces, so split after its closing parenthesis.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def status_field(pid: int, name: str) -> int:
    """Return a numeric field of /proc/PID/status, such as VmHWM in KiB or Threads."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key == name:
                return int(value.split()[0])
    raise KeyError(f"/proc/{pid}/status has no field {name}")


@dataclass
class MemorySampler:
    """Samples a process's resident memory and thread count every ``interval`` seconds in a background thread."""

    pid: int
    interval: float = 1.0
    peak_rss_kib: int = 0
    peak_threads: int = 0
    samples: int = 0
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.peak_rss_kib = max(self.peak_rss_kib, status_field(self.pid, "VmRSS"))
                self.peak_threads = max(self.peak_threads, status_field(self.pid, "Threads"))
                self.samples += 1
            except (OSError, KeyError):
                return  # the process has exited
            self._stopping.wait(self.interval)


def list_metadata(api_client: client.ApiClient, path: str, **selectors: str) -> list[dict[str, Any]]:
    """List the objects at ``path`` as metadata only (PartialObjectMetadata). The selectors are labelSelector and fieldSelector."""
    return _get(api_client, path, METADATA_LIST, selectors).get("items") or []


def list_table_column(api_client: client.ApiClient, path: str, column: str) -> dict[str, str]:
    """Return one printer column of the server-side table at ``path``, by object name."""
    table = _get(api_client, path, TABLE, {"includeObject": "Metadata"})
    names = [definition["name"] for definition in table.get("columnDefinitions") or []]
    if column not in names:
        raise KeyError(f"the table at {path} has no column {column!r}; it has {', '.join(names)}")
    index = names.index(column)
    return {row["object"]["metadata"]["name"]: str(row["cells"][index]) for row in table.get("rows") or []}


def _get(api_client: client.ApiClient, path: str, accept: str, query: dict[str, str]) -> dict[str, Any]:
    method, url, headers, body, post_params = api_client.param_serialize(
        "GET", path, query_params=list(query.items()), header_params={"Accept": accept}, auth_settings=["BearerToken"]
    )
    response = api_client.call_api(method, url, headers, body, post_params, _request_timeout=60)
    data = response.read()
    if response.status != 200:
        raise ApiException(status=response.status, reason=response.reason, body=data.decode(errors="replace"))
    return json.loads(data)


@dataclass(frozen=True)
class OperatorMetrics:
    """The figures of the operator's /metrics that the benchmark reports."""

    reconcile_errors: dict[str, float]
    jobs_by_phase: dict[str, float]
    reconcile_passes: float
    reconcile_seconds_total: float


def scrape_operator_metrics(port: int) -> OperatorMetrics:
    """Read the operator's /metrics on 127.0.0.1:``port``. The jobs gauge is summed over GPU types."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    errors: dict[str, float] = {}
    phases: dict[str, float] = {}
    passes = seconds = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kubeclip_operator_reconcile_errors_total":
                errors[sample.labels["reason"]] = sample.value
            elif sample.name == "kubeclip_operator_jobs":
                phases[sample.labels["phase"]] = phases.get(sample.labels["phase"], 0.0) + sample.value
            elif sample.name == "kubeclip_operator_reconcile_duration_seconds_count":
                passes = sample.value
            elif sample.name == "kubeclip_operator_reconcile_duration_seconds_sum":
                seconds = sample.value
    return OperatorMetrics(errors, phases, passes, seconds)


def scrape_apiserver_requests(api_client: client.ApiClient) -> dict[str, float]:
    """Count the API server's requests so far by verb and resource, such as ``GET clipclusters``, from its /metrics.

    The counter carries no client identity, so the benchmark's own lists, creates and
    ConfigMap patches are counted with the operator's and the controllers' requests.
    """
    method, url, headers, body, post_params = api_client.param_serialize("GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"])
    response = api_client.call_api(method, url, headers, body, post_params, _request_timeout=60)
    text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "apiserver_request_total" or sample.labels.get("verb") == "WATCH":
                continue
            resource = sample.labels.get("resource", "")
            if sample.labels.get("subresource"):
                resource += "/" + sample.labels["subresource"]
            key = f"{sample.labels.get('verb')} {resource}"
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


@dataclass(frozen=True)
class Snapshot:
    """Counters read at one moment, so that two snapshots give what happened between them."""

    monotonic: float
    cpu_seconds: dict[str, float]
    requests: dict[str, float]
    operator: OperatorMetrics

    @classmethod
    def take(cls, pids: dict[str, int], api_client: client.ApiClient, metrics_port: int) -> Snapshot:
        cpu = {component: cpu_seconds(pid) for component, pid in pids.items()}
        cpu["benchmark"] = time.process_time()
        return cls(time.monotonic(), cpu, scrape_apiserver_requests(api_client), scrape_operator_metrics(metrics_port))

    def since(self, earlier: Snapshot, top: int = 12) -> dict[str, Any]:
        """Return CPU seconds, reconcile passes and the ``top`` most frequent API requests between ``earlier`` and this snapshot."""
        requests = {key: value - earlier.requests.get(key, 0.0) for key, value in self.requests.items()}
        busiest = sorted(((key, count) for key, count in requests.items() if count > 0), key=lambda item: -item[1])[:top]
        passes = self.operator.reconcile_passes - earlier.operator.reconcile_passes
        seconds = self.operator.reconcile_seconds_total - earlier.operator.reconcile_seconds_total
        return {
            "seconds": round(self.monotonic - earlier.monotonic, 1),
            "cpuSeconds": {component: round(value - earlier.cpu_seconds[component], 1) for component, value in self.cpu_seconds.items()},
            "reconcilePasses": int(passes),
            "meanReconcileSeconds": round(seconds / passes, 3) if passes else None,
            "apiServerRequests": {key: int(count) for key, count in busiest},
            "apiServerRequestsTotal": int(sum(count for count in requests.values() if count > 0)),
        }


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """Return the count, median, 90th percentile (nearest rank) and maximum of ``values``."""
    if not values:
        return {"count": 0, "median": None, "p90": None, "max": None}
    ordered = sorted(values)
    p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
    return {"count": len(ordered), "median": statistics.median(ordered), "p90": p90, "max": ordered[-1]}


def parse_timestamp(stamp: str) -> float:
    """Return a Kubernetes RFC 3339 timestamp (second resolution, UTC) as seconds since the epoch."""
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))
