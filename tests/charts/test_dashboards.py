"""The Grafana dashboards: valid JSON, loaded into the chart's ConfigMaps, querying real metrics.

Metric names come from the trainer's registry and, for the operator, from the table
below. PromQL syntax is checked with promtool, which comes with Debian's prometheus
package (scripts/install-control-plane.sh installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from kubeclip.operator.metrics import OperatorMetrics
from kubeclip.trainer.metrics import TrainerMetrics
from tests.support.controlplane import INSTALL_HINT
from tests.support.operator_access import CHART_DIR, render_chart

DASHBOARD_DIR = CHART_DIR / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
RUN_DASHBOARD = DASHBOARD_DIR / "kubeclip-run.json"
FLEET_DASHBOARD = DASHBOARD_DIR / "kubeclip-fleet.json"

#: Sample names that Prometheus stores for each metric type (client_python's exposition).
SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
#: Values substituted for Grafana's variables before promtool parses a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$namespace": "team-a", "$job": "first-job"}
#: Series labels that the scrape makes from the trainer pod's kubeclip.dev/job-* labels.
JOB_LABELS = ('kubeclip_dev_job_namespace="$namespace"', 'kubeclip_dev_job_name="$job"')


def sample_names(metric_types: dict[str, str]) -> set[str]:
    return {name + suffix for name, kind in metric_types.items() for suffix in SAMPLE_SUFFIXES[kind]}


def operator_metric_types() -> dict[str, str]:
    metrics = OperatorMetrics(CollectorRegistry())
    return {family.name: family.type for family in metrics.registry.collect()}


def trainer_metric_types() -> dict[str, str]:
    metrics = TrainerMetrics(CollectorRegistry(), with_gpu=True)
    return {family.name: family.type for family in metrics.registry.collect()}


KNOWN_SAMPLES = sample_names(trainer_metric_types()) | sample_names(operator_metric_types())


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Return every PromQL expression: panel targets and query variables."""
    expressions = [target["expr"] for panel in query_panels(dashboard) for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            expressions.append(variable["query"]["query"])
    return expressions


def metric_names(expression: str) -> set[str]:
    """Return the metric names in a PromQL expression or a label_values() call.

    Label names are removed first: selector bodies ``{...}``, ``by (...)`` and
    ``without (...)`` lists, and the label argument of ``label_values``.
    """
    stripped = re.sub(r"\{[^}]*\}", "", expression)
    stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", "", stripped)
    stripped = re.sub(r",\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$", ")", stripped) if stripped.startswith("label_values(") else stripped
    return set(re.findall(r"\bkubeclip_[a-z0-9_]+\b", stripped))


def test_dashboard_files_are_the_two_dashboards() -> None:
    assert [path.name for path in DASHBOARD_FILES] == ["kubeclip-fleet.json", "kubeclip-run.json"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_configmap_carries_dashboard_file(path: Path) -> None:
    data = {key: value for manifest in render_chart() if manifest["kind"] == "ConfigMap" for key, value in manifest["data"].items()}
    assert json.loads(data[path.name]) == load(path)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_dashboard_has_grafana_model(path: Path) -> None:
    dashboard = load(path)
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["uid"] == path.stem
    assert dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    for panel in query_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']} has no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    datasource = dashboard["templating"]["list"][0]
    assert (datasource["name"], datasource["type"], datasource["query"]) == ("datasource", "datasource", "prometheus")


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_queries_use_known_metrics(path: Path) -> None:
    for expression in queries(load(path)):
        names = metric_names(expression)
        assert names, f"no kubeclip metric in {expression!r}"
        assert names <= KNOWN_SAMPLES, f"{sorted(names - KNOWN_SAMPLES)} in {expression!r} are not metrics of the trainer or the operator"


def test_metric_name_extraction_skips_labels() -> None:
    expression = 'sum by (kubeclip_dev_job_name) (rate(kubeclip_train_samples_total{kubeclip_dev_job_name="$job"}[1m]))'
    assert metric_names(expression) == {"kubeclip_train_samples_total"}
    assert metric_names("label_values(kubeclip_train_steps_total, kubeclip_dev_job_namespace)") == {"kubeclip_train_steps_total"}
    assert metric_names("kubeclip_train_loss_typo") == {"kubeclip_train_loss_typo"}


def test_run_dashboard_selects_one_job() -> None:
    dashboard = load(RUN_DASHBOARD)
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            for label in JOB_LABELS:
                assert label in target["expr"], f"panel {panel['title']} does not select the job: {target['expr']}"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["namespace"]["query"]["query"] == "label_values(kubeclip_train_steps_total, kubeclip_dev_job_namespace)"
    assert variables["job"]["query"]["query"] == 'label_values(kubeclip_train_steps_total{kubeclip_dev_job_namespace="$namespace"}, kubeclip_dev_job_name)'


RUN_PANELS = {
    "Training loss": {"kubeclip_train_loss"},
    "Learning rate": {"kubeclip_train_learning_rate"},
    "Samples per second": {"kubeclip_train_samples_total"},
    "Retrieval recall": {"kubeclip_eval_recall_ratio"},
    "GPU memory": {"kubeclip_gpu_memory_used_bytes"},
}
FLEET_PANELS = {
    "Jobs by phase and GPU type": {"kubeclip_operator_jobs"},
    "Reconcile errors": {"kubeclip_operator_reconcile_errors_total"},
    "Scheduling delay by GPU type": {"kubeclip_operator_scheduling_delay_seconds_bucket"},
    "Cluster reachability": {"kubeclip_operator_cluster_reachable"},
}


@pytest.mark.parametrize("path, expected", [(RUN_DASHBOARD, RUN_PANELS), (FLEET_DASHBOARD, FLEET_PANELS)], ids=["run", "fleet"])
def test_dashboard_shows_required_panels(path: Path, expected: dict[str, set[str]]) -> None:
    panels = {panel["title"]: panel for panel in query_panels(load(path))}
    for title, metrics in expected.items():
        assert title in panels, f"{path.name} has no panel {title!r}"
        used = set().union(*(metric_names(target["expr"]) for target in panels[title]["targets"]))
        assert metrics <= used, f"panel {title!r} queries {sorted(used)}"


def test_scheduling_delay_shows_quantiles() -> None:
    panel = next(panel for panel in query_panels(load(FLEET_DASHBOARD)) if panel["title"] == "Scheduling delay by GPU type")
    expressions = [target["expr"] for target in panel["targets"]]
    assert [re.match(r"histogram_quantile\(([0-9.]+),", expression).group(1) for expression in expressions] == ["0.5", "0.9", "0.99"]
    assert all("by (le, gpu_type)" in expression for expression in expressions)


def test_queries_parse_as_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(f"promtool is not on PATH; {INSTALL_HINT}")
    expressions = [expression for path in DASHBOARD_FILES for expression in queries(load(path)) if not expression.startswith("label_values(")]
    rules = [{"record": f"kubeclip:dashboard_query_{index}", "expr": substitute_variables(expression)} for index, expression in enumerate(expressions)]
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def substitute_variables(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    assert "$" not in expression, f"unknown Grafana variable in {expression!r}"
    return expression
