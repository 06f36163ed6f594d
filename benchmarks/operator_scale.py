"""Apply many ClipTrainingJobs at once and measure how fast the operator brings them to Running.

The benchmark starts its own development cluster (kube-apiserver, etcd, controller
manager, scheduler and kwok on 127.0.0.1) with enough simulated H100 nodes, installs the
CRDs, creates the Managed ClipCluster ``managed`` and starts ``kubeclip operator`` as a
child process. Then it creates N jobs from 8 threads and polls with list calls every
second until every job has its trainer Job, every trainer pod is Running and every
job's ``status.phase`` is Running. Then it measures a minute of steady state, in which
nothing changes and the operator only resyncs. It reports those times, per-job delays,
the operator's peak memory, the CPU time of the operator and the control plane, and the
API server's requests by verb and resource.

No trainer runs, because 1,000 trainers cannot run on one machine's CPUs, and kwok only
moves the pods to Running. A status reaches Running only from a trainer's progress report, so
this benchmark writes the report a trainer would write (``WORKLOAD-progress``, key
``progress.json``, state Running) once a poll finds the job's pod Running. The time to
status Running therefore includes the benchmark's own polling delay of up to a second.

Run from the repository root:

    .venv/bin/python benchmarks/operator_scale.py --jobs 50      # a check, about 2 minutes with the cluster start
    .venv/bin/python benchmarks/operator_scale.py                # 1,000 jobs, see docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

import scale_probes as probes
import scale_setup as setup
from kubeclip.builders.naming import JOB_NAME_LABEL, TRAINER_SELECTOR, progress_configmap_name, workload_name
from kubeclip.dev import cluster as devcluster
from kubeclip.operator.progress import PROGRESS_KEY

NAMESPACE = "scale"
APPLY_THREADS = 8
POLL_SECONDS = 1.0
#: Seconds between the progress lines printed while waiting.
PRINT_SECONDS = 10.0
DEFAULT_OUTPUT = Path("benchmarks/results/operator_scale.json")
CTJ_PATH = f"/apis/{setup.GROUP}/{setup.VERSION}/namespaces/{NAMESPACE}/cliptrainingjobs"
SIMULATION_NOTE = (
    "No trainer runs. Once a job's pod is Running, this benchmark writes the progress report a trainer would write "
    "(ConfigMap WORKLOAD-progress, key progress.json, state Running), and the operator turns it into status.phase Running."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="ClipTrainingJobs to create (default 1000)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds from the first create until the run gives up (default 1800)")
    parser.add_argument(
        "--steady-seconds", type=float, default=60.0, help="seconds to measure the operator's and API server's load once every job runs; 0 skips it (default 60)"
    )
    parser.add_argument("--resync-seconds", type=float, default=30.0, help="the operator's --resync-seconds (default 30)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file for the figures (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    return args


@dataclass
class Progress:
    """Milestone times found by the polls, in seconds after the first create (monotonic clock)."""

    jobs: int
    job_created: dict[str, float] = field(default_factory=dict)
    pod_running: dict[str, float] = field(default_factory=dict)
    #: Wall-clock time (epoch seconds) when the progress report of each job was written.
    reported: dict[str, float] = field(default_factory=dict)
    status_running: dict[str, float] = field(default_factory=dict)
    report_failures: int = 0
    #: Rows of [seconds, trainer Jobs, pods Running, reports written, statuses Running], one per printed line.
    timeline: list[list[float]] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{len(self.job_created)} of {self.jobs} trainer Jobs created, {len(self.pod_running)} pods Running, "
            f"{len(self.reported)} progress reports written, {len(self.status_running)} statuses Running"
        )

    @property
    def done(self) -> bool:
        return len(self.status_running) >= self.jobs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM takes the same way out as Ctrl-C, so the cluster is always stopped.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    name = f"scale-{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="kubeclip-scale-"))
    data_dir = workdir / "cluster"
    operator = None
    try:
        load_before = os.getloadavg()
        print(f"load average {load_before[0]:.1f} at the start; starting cluster {name} in {data_dir}", flush=True)
        state = devcluster.up(name, data_dir)
        api_client = devcluster.new_api_client(state.kubeconfig)
        extra_nodes = prepare_cluster(state.kubeconfig, api_client, args.jobs)
        metrics_port, health_port = setup.free_port(), setup.free_port()
        log_path = args.output.with_suffix(".operator.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        operator = setup.start_operator(state.kubeconfig, metrics_port, health_port, args.resync_seconds, log_path)
        print(f"operator PID {operator.pid} is up (log {log_path}); creating {args.jobs} jobs", flush=True)
        result = measure(args, state, api_client, operator.pid, metrics_port)
        result.update(
            jobs=args.jobs, extraH100Nodes=extra_nodes, resyncSeconds=args.resync_seconds, command=" ".join([sys.executable, *sys.argv]),
            machine=machine_description(load_before), note=SIMULATION_NOTE, operatorLog=str(log_path),
        )  # fmt: skip
        write_output(args.output, result)
        print_report(result)
        return 0 if result["completed"] else 1
    except KeyboardInterrupt:
        print("interrupted; stopping the operator and the cluster", file=sys.stderr)
        return 130
    finally:
        if operator is not None:
            setup.stop_operator(operator)
        devcluster.down(name, data_dir)
        shutil.rmtree(workdir, ignore_errors=True)


def prepare_cluster(kubeconfig: Path, api_client: client.ApiClient, jobs: int) -> int:
    """Install the CRDs, add H100 nodes for every trainer pod, and create the ClipCluster, namespace and Secret."""
    core = client.CoreV1Api(api_client)
    setup.install_crds(kubeconfig)
    count = setup.extra_node_count(jobs)
    names = setup.register_h100_nodes(core, count)
    setup.wait_for_nodes(core, names)
    setup.create_managed_cluster(api_client)
    setup.create_namespace(core, NAMESPACE)
    print(f"CRDs installed, {count} extra H100 nodes Ready, ClipCluster managed created", flush=True)
    return count


def measure(args: argparse.Namespace, state: devcluster.ClusterState, api_client: client.ApiClient, operator_pid: int, metrics_port: int) -> dict[str, Any]:
    """Create the jobs, wait for the three milestones, then measure the steady state. The operator still runs afterwards."""
    pids = {record.name: record.pid for record in state.processes} | {"operator": operator_pid}
    sampler = probes.MemorySampler(operator_pid).start()
    load_at_first_create = os.getloadavg()[0]
    rss_at_first_create = probes.status_field(operator_pid, "VmRSS")
    progress = Progress(args.jobs)
    # Counters start at the first create, so cluster and operator startup are left out.
    before = probes.Snapshot.take(pids, api_client, metrics_port)
    t0 = time.monotonic()
    try:
        apply_seconds = create_jobs(api_client, args.jobs, t0)
        print(f"{args.jobs} jobs created in {apply_seconds:.1f} s", flush=True)
        completed = wait_for_running(api_client, progress, t0, args.timeout)
        after = probes.Snapshot.take(pids, api_client, metrics_port)
        delays = per_job_delays(api_client, progress)
        steady = measure_steady_state(pids, api_client, metrics_port, args.steady_seconds) if completed and args.steady_seconds > 0 else None
    finally:
        sampler.stop()
    return {
        "completed": completed,
        "reached": progress.describe(),
        "loadAverageAtFirstCreate": round(load_at_first_create, 2),
        "secondsAfterFirstCreate": {
            "allJobsApplied": round(apply_seconds, 1),
            "allTrainerJobsCreated": _last(progress.job_created, args.jobs),
            "allPodsRunning": _last(progress.pod_running, args.jobs),
            "allStatusesRunning": _last(progress.status_running, args.jobs),
            "measurementEnded": round(after.monotonic - t0, 1),
        },
        "perJobDelaySeconds": delays,
        "reportWriteFailures": progress.report_failures,
        "operator": {
            "rssAtFirstCreateMiB": round(rss_at_first_create / 1024, 1),
            "peakMemoryMiB": round(probes.status_field(operator_pid, "VmHWM") / 1024, 1),
            "peakSampledRssMiB": round(sampler.peak_rss_kib / 1024, 1),
            "rssSamples": sampler.samples,
            "peakThreads": sampler.peak_threads,
            "reconcileErrors": after.operator.reconcile_errors,
            "jobsByPhase": {phase: value for phase, value in after.operator.jobs_by_phase.items() if value},
        },
        "measurement": after.since(before),
        "steadyState": steady,
        "loadAverageAtEnd": round(os.getloadavg()[0], 2),
        "timeline": progress.timeline,
    }


def measure_steady_state(pids: dict[str, int], api_client: client.ApiClient, metrics_port: int, seconds: float) -> dict[str, Any]:
    """Measure what keeping every job Running costs when nothing changes, so only resync passes run and nothing polls."""
    print(f"every job runs; measuring the steady state for {seconds:.0f} s", flush=True)
    start = probes.Snapshot.take(pids, api_client, metrics_port)
    time.sleep(seconds)
    return probes.Snapshot.take(pids, api_client, metrics_port).since(start)


def create_jobs(api_client: client.ApiClient, count: int, t0: float) -> float:
    """Create ``count`` jobs from 8 threads as fast as the API server accepts them, and return the seconds it took."""
    api = client.CustomObjectsApi(api_client)

    def create(index: int) -> None:
        body = setup.training_job(NAMESPACE, job_name(index))
        api.create_namespaced_custom_object(setup.GROUP, setup.VERSION, NAMESPACE, "cliptrainingjobs", body, _preload_content=False)

    with ThreadPoolExecutor(APPLY_THREADS, thread_name_prefix="create") as pool:
        for _ in pool.map(create, range(count)):
            pass
    return time.monotonic() - t0


def job_name(index: int) -> str:
    return f"scale-{index:04d}"


def wait_for_running(api_client: client.ApiClient, progress: Progress, t0: float, timeout: float) -> bool:
    """Poll every second until every status is Running; write each job's progress report once its pod is Running.

    Returns:
        False when ``timeout`` seconds after ``t0`` passed first, after printing how far it got.
    """
    core = client.CoreV1Api(api_client)
    last_print = 0.0
    with ThreadPoolExecutor(APPLY_THREADS, thread_name_prefix="report") as writers:
        while not progress.done:
            started = time.monotonic()
            if started - t0 > timeout:
                print(f"timed out {timeout:.0f} s after the first create: {progress.describe()}", file=sys.stderr, flush=True)
                return False
            poll_once(api_client, core, progress, writers, t0)
            if started - last_print >= PRINT_SECONDS:
                print(f"{started - t0:6.0f} s: {progress.describe()}", flush=True)
                counts = (progress.job_created, progress.pod_running, progress.reported, progress.status_running)
                progress.timeline.append([round(started - t0, 1), *(len(times) for times in counts)])
                last_print = started
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - started)))
    return True


def poll_once(api_client: client.ApiClient, core: client.CoreV1Api, progress: Progress, writers: ThreadPoolExecutor, t0: float) -> None:
    """Run one round of list calls: trainer Jobs, Running trainer pods, then the jobs' phases."""
    # Trainer Jobs, as metadata only.
    if len(progress.job_created) < progress.jobs:
        for job in probes.list_metadata(api_client, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", labelSelector=TRAINER_SELECTOR):
            progress.job_created.setdefault(job["metadata"]["labels"][JOB_NAME_LABEL], time.monotonic() - t0)

    # Running trainer pods. Each new one gets the report its trainer would write.
    if len(progress.pod_running) < progress.jobs:
        pods = probes.list_metadata(api_client, f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=TRAINER_SELECTOR, fieldSelector="status.phase=Running")
        for pod in pods:
            metadata = pod["metadata"]
            name = metadata["labels"][JOB_NAME_LABEL]
            if metadata.get("deletionTimestamp") or name in progress.pod_running:
                continue
            progress.pod_running[name] = time.monotonic() - t0
            writers.submit(write_report, core, progress, name, metadata["name"])

    # Phases from the server-side table, once reports exist, since none can be Running before.
    if progress.reported:
        for name, phase in probes.list_table_column(api_client, CTJ_PATH, "Phase").items():
            if phase == "Running":
                progress.status_running.setdefault(name, time.monotonic() - t0)


def write_report(core: client.CoreV1Api, progress: Progress, job: str, pod: str) -> None:
    """Write the progress report a trainer in ``pod`` would write. On failure the next poll tries again."""
    updated = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = {"state": "Running", "pod": pod, "step": 1, "totalSteps": 100, "epoch": 1, "loss": 2.0, "updatedTime": updated}
    configmap = progress_configmap_name(workload_name(NAMESPACE, job))
    try:
        core.patch_namespaced_config_map(configmap, NAMESPACE, {"data": {PROGRESS_KEY: json.dumps(report)}}, _preload_content=False)
    except ApiException as error:
        print(f"writing the progress report of job {job} to ConfigMap {configmap} failed: {error.status} {error.reason}; retrying", file=sys.stderr)
        progress.report_failures += 1
        progress.pod_running.pop(job, None)
        return
    progress.reported[job] = time.time()


def per_job_delays(api_client: client.ApiClient, progress: Progress) -> dict[str, Any]:
    """Delays from each job's creation, from server timestamps (1 s resolution), read with one full list per kind."""
    jobs = json.loads(client.CustomObjectsApi(api_client).list_namespaced_custom_object(setup.GROUP, setup.VERSION, NAMESPACE, "cliptrainingjobs", _preload_content=False).data)
    created = {item["metadata"]["name"]: probes.parse_timestamp(item["metadata"]["creationTimestamp"]) for item in jobs["items"]}
    running = {item["metadata"]["name"]: _running_since(item) for item in jobs["items"]}
    trainer_jobs = probes.list_metadata(api_client, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", labelSelector=TRAINER_SELECTOR)
    trainer_created = {job["metadata"]["labels"][JOB_NAME_LABEL]: probes.parse_timestamp(job["metadata"]["creationTimestamp"]) for job in trainer_jobs}
    pods = json.loads(client.CoreV1Api(api_client).list_namespaced_pod(NAMESPACE, label_selector=TRAINER_SELECTOR, _preload_content=False).data)
    pod_started = {pod["metadata"]["labels"][JOB_NAME_LABEL]: probes.parse_timestamp(pod["status"]["startTime"]) for pod in pods["items"] if (pod.get("status") or {}).get("startTime")}

    def since_creation(times: dict[str, float | None]) -> list[float]:
        return [times[name] - created[name] for name in created if times.get(name) is not None]

    return {
        "creationToTrainerJobCreated": probes.summarize(since_creation(trainer_created)),
        "creationToPodRunning": probes.summarize(since_creation(pod_started)),
        "creationToStatusRunning": probes.summarize(since_creation(running)),
        # The report time is cut to whole seconds too, so both ends of this delay have the same resolution.
        "reportWrittenToStatusRunning": probes.summarize(
            [running[name] - math.floor(progress.reported[name]) for name in progress.reported if running.get(name) is not None]
        ),
    }


def _running_since(job: dict[str, Any]) -> float | None:
    # The operator sets lastTransitionTime when the Running condition turns True.
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Running" and condition["status"] == "True":
            return probes.parse_timestamp(condition["lastTransitionTime"])
    return None


def _last(times: dict[str, float], expected: int) -> float | None:
    """Return the time the last of ``expected`` objects reached a milestone, or None when some never did."""
    return round(max(times.values()), 1) if len(times) >= expected else None


def machine_description(load_before: tuple[float, float, float]) -> dict[str, Any]:
    with open("/proc/meminfo") as meminfo:
        total_kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    return {"cpus": os.cpu_count(), "memoryGiB": round(total_kib / 1024**2, 1), "loadAverageAtStart": [round(value, 2) for value in load_before]}


def write_output(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def print_report(result: dict[str, Any]) -> None:
    milestones = result["secondsAfterFirstCreate"]
    operator = result["operator"]
    machine = result["machine"]
    measurement = result["measurement"]
    print()
    print(f"{result['jobs']} ClipTrainingJobs, {result['extraH100Nodes']} extra H100 nodes, {machine['cpus']} CPUs, "
          f"load average {machine['loadAverageAtStart'][0]} at the start and {result['loadAverageAtEnd']} at the end")  # fmt: skip
    print(f"NOTE: {result['note']}")
    if not result["completed"]:
        print(f"INCOMPLETE: {result['reached']}")
    print()
    print(f"{'milestone':<34}{'seconds after the first create':>32}")
    for label, key in (("all jobs applied", "allJobsApplied"), ("every job has its trainer Job", "allTrainerJobsCreated"),
                       ("every trainer pod Running", "allPodsRunning"), ("every status.phase Running", "allStatusesRunning")):  # fmt: skip
        print(f"{label:<34}{_format(milestones[key]):>32}")
    print()
    print(f"{'per-job delay, s (1 s timestamps)':<40}{'median':>8}{'p90':>8}{'max':>8}")
    for label, key in (("creation -> trainer Job created", "creationToTrainerJobCreated"), ("creation -> pod Running", "creationToPodRunning"),
                       ("creation -> status Running", "creationToStatusRunning"), ("report written -> status Running", "reportWrittenToStatusRunning")):  # fmt: skip
        summary = result["perJobDelaySeconds"][key]
        print(f"{label:<40}{_format(summary['median']):>8}{_format(summary['p90']):>8}{_format(summary['max']):>8}")
    print()
    print(f"operator: RSS {operator['rssAtFirstCreateMiB']} MiB at the first create, peak memory (VmHWM) {operator['peakMemoryMiB']} MiB, "
          f"peak of {operator['rssSamples']} RSS samples {operator['peakSampledRssMiB']} MiB, peak threads {operator['peakThreads']}")  # fmt: skip
    print(f"operator: reconcile errors {operator['reconcileErrors'] or 'none'}; jobs by phase {operator['jobsByPhase']}")
    _print_window("until every status was Running", measurement)
    if result["steadyState"]:
        _print_window("steady state, every job Running", result["steadyState"])


def _print_window(title: str, window: dict[str, Any]) -> None:
    print()
    print(f"{title} ({window['seconds']} s): {window['reconcilePasses']} reconcile passes, mean {_format(window['meanReconcileSeconds'], 3)} s")
    print("  CPU seconds: " + ", ".join(f"{component} {seconds}" for component, seconds in window["cpuSeconds"].items()))
    print(f"  API requests: {window['apiServerRequestsTotal']} in all; " + ", ".join(f"{key} {count}" for key, count in window["apiServerRequests"].items()))


def _format(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
