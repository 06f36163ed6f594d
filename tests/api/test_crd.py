"""The CRDs generated from the API types: drift against crds/, schema shape, and the real API server.

The unit tests read the generated schema. The ``controlplane`` tests install the CRDs
into the session's local cluster and check what kube-apiserver v1.36 accepts, defaults
and rejects. The CRDs stay installed after the module, because deleting a CRD also
deletes its objects, and other modules of the same session may use them.
"""

from __future__ import annotations

import copy
import re
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel

from kubeclip.api.crd import (
    CLIP_DATASET,
    CLIP_TRAINING_JOB,
    REGENERATE_COMMAND,
    RESOURCE_DEFINITIONS,
    VERSION,
    ResourceDefinition,
    SchemaConversionError,
    build_crd,
    generate_model_schema,
    main,
    render_crd_file,
)
from kubeclip.api.job import API_GROUP, CEL_RULES_KEY
from kubeclip.api.loading import load_job_file
from kubeclip.api.recommendations import resolve_settings
from kubeclip.api.status import (
    ClipTrainingJobStatus,
    Condition,
    ConditionReason,
    ConditionStatus,
    ConditionType,
    JobPhase,
    ResolvedSettingsStatus,
    TrainingProgress,
)
from tests.support.controlplane import ControlPlane, kubectl, wait_for

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "crds"
EXAMPLE_JOB = REPO / "examples" / "local-job.yaml"
ESTABLISHED_TIMEOUT_SECONDS = 30.0
# The API server can publish a new CRD's OpenAPI document, which kubectl explain reads, after it is Established.
EXPLAIN_TIMEOUT_SECONDS = 60.0
HTTP_UNPROCESSABLE_ENTITY = 422
TRANSITION_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

# Fields whose default comes from the recommendation table for the base model.
RECOMMENDED_FIELDS = [
    ("model", "projectionDim"),
    ("dataset", "promptMaxLength"),
    ("training", "epochs"),
    ("training", "perDeviceTrainBatchSize"),
    ("training", "learningRate"),
    ("training", "warmupSteps"),
]
FIXED_DEFAULTS = [
    (("model",), {}),
    (("model", "baseModel"), "FacebookAI/roberta-base"),
    (("model", "visionEncoder"), "openai/clip-vit-base-patch32"),
    (("dataset", "trainSplitRatio"), 0.9),
    (("dataset", "validationSplitRatio"), 0.1),
    (("dataset", "splitType"), "Random"),
    (("infrastructure", "type"), "Managed"),
    (("infrastructure", "numNodes"), 1),
    (("training",), {}),
    (("training", "torchDtype"), "bfloat16"),
    (("training", "weightDecay"), "0.1"),
    (("training", "saveSteps"), 100),
    (("training", "lrScheduler"), "Cosine"),
    (("output",), {}),
    (("suspend",), False),
]


def spec_schema() -> dict[str, Any]:
    return build_crd(CLIP_TRAINING_JOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def spec_property(*path: str) -> dict[str, Any]:
    node = spec_schema()
    for name in path:
        node = node["properties"][name]
    return node


def walk_properties(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield every property schema below ``node`` with its dotted path, list items included."""
    for name, child in node.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from walk_properties(child, f"{path}.{name}")
    if "items" in node:
        yield from walk_properties(node["items"], f"{path}[]")


def all_openapi_schemas() -> list[tuple[str, dict[str, Any]]]:
    return [(definition.kind, build_crd(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]) for definition in RESOURCE_DEFINITIONS]


# Drift between the models and the committed files.


@pytest.mark.parametrize("definition", RESOURCE_DEFINITIONS, ids=lambda definition: definition.file_name)
def test_committed_crd_matches_models(definition: ResourceDefinition) -> None:
    path = CRDS_DIR / definition.file_name
    assert path.is_file(), f"{path} is missing; run `{REGENERATE_COMMAND}` and commit the result"
    assert path.read_text(encoding="utf-8") == render_crd_file(definition), (
        f"{path} differs from the CRD generated from kubeclip/api; run `{REGENERATE_COMMAND}` and commit the result"
    )


def test_crds_folder_holds_only_generated_files() -> None:
    expected = {definition.file_name for definition in RESOURCE_DEFINITIONS}
    committed = {path.name for path in CRDS_DIR.iterdir()}
    assert committed == expected, f"crds/ should contain exactly the generated files; remove the others and run `{REGENERATE_COMMAND}`"


def test_command_writes_every_crd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.splitlines()
    for definition in RESOURCE_DEFINITIONS:
        written = tmp_path / "out" / definition.file_name
        assert written.read_text(encoding="utf-8") == render_crd_file(definition)
        assert str(written) in printed


def test_generated_file_starts_with_header() -> None:
    text = render_crd_file(CLIP_TRAINING_JOB)
    assert text.startswith("# Generated from the pydantic models in kubeclip/api")
    assert "Do not edit by hand" in text.splitlines()[0]
    assert REGENERATE_COMMAND in text.split("apiVersion:")[0]


def test_generated_file_has_no_yaml_aliases() -> None:
    for definition in RESOURCE_DEFINITIONS:
        text = render_crd_file(definition)
        assert "&id" not in text, f"{definition.file_name} contains a YAML anchor"
        assert "*id" not in text, f"{definition.file_name} contains a YAML alias"


# Shape of the generated schema.


@pytest.mark.parametrize("kind, schema", all_openapi_schemas(), ids=[definition.kind for definition in RESOURCE_DEFINITIONS])
def test_schema_has_no_json_schema_leftovers(kind: str, schema: dict[str, Any]) -> None:
    text = json.dumps(schema)
    for keyword in ('"$ref"', '"$defs"', '"anyOf"', '"allOf"', '"oneOf"', '"title"', '"const"', '"additionalProperties": false'):
        assert keyword not in text, f"{kind} schema contains {keyword}"


@pytest.mark.parametrize("kind, schema", all_openapi_schemas(), ids=[definition.kind for definition in RESOURCE_DEFINITIONS])
def test_every_property_has_description_and_type(kind: str, schema: dict[str, Any]) -> None:
    for path, node in walk_properties(schema, kind):
        if path == f"{kind}.metadata":
            continue
        assert node.get("description"), f"{path} has no description for kubectl explain"
        assert "type" in node, f"{path} has no type, which a structural schema requires"


@pytest.mark.parametrize("path", RECOMMENDED_FIELDS, ids=".".join)
def test_recommended_field_has_no_default(path: tuple[str, ...]) -> None:
    node = spec_property(*path)
    assert "default" not in node, f"spec.{'.'.join(path)} takes its default from the recommendation table"


@pytest.mark.parametrize("path, value", FIXED_DEFAULTS, ids=[".".join(path) for path, _ in FIXED_DEFAULTS])
def test_fixed_default_is_in_schema(path: tuple[str, ...], value: object) -> None:
    assert spec_property(*path).get("default") == value


def test_exclusive_bounds_use_openapi_v3_0_form() -> None:
    ratio = spec_property("dataset", "trainSplitRatio")
    assert ratio["minimum"] == 0
    assert ratio["exclusiveMinimum"] is True
    assert ratio["maximum"] == 1
    assert ratio["exclusiveMaximum"] is True


def test_enums_and_patterns_come_from_models() -> None:
    assert spec_property("infrastructure", "gpuType")["enum"] == ["H100", "A100", "L40"]
    assert spec_property("training", "learningRate")["pattern"].startswith("^[0-9]+")
    assert spec_property("infrastructure", "gpuType")["description"].startswith("GPU model")


def test_open_dict_preserves_unknown_fields() -> None:
    lora = spec_property("model", "lora")
    assert lora["type"] == "object"
    assert lora["x-kubernetes-preserve-unknown-fields"] is True


def test_required_fields_match_models() -> None:
    assert spec_schema()["required"] == ["dataset", "infrastructure"]
    assert spec_property("infrastructure")["required"] == ["gpuType"]
    assert spec_property("dataset", "source")["required"] == ["uri"]


@pytest.mark.parametrize("kind, schema", all_openapi_schemas(), ids=[definition.kind for definition in RESOURCE_DEFINITIONS])
def test_every_cel_rule_has_message(kind: str, schema: dict[str, Any]) -> None:
    for path, node in walk_properties(schema, kind):
        for rule in node.get(CEL_RULES_KEY, []):
            assert rule.get("message"), f"{path} rule {rule['rule']!r} has no message"


def test_immutable_fields_carry_transition_rule() -> None:
    for name in ("model", "dataset", "infrastructure"):
        rules = [rule["rule"] for rule in spec_property(name)[CEL_RULES_KEY]]
        assert "self == oldSelf" in rules, f"spec.{name} should be immutable"
    for name in ("training", "output", "suspend"):
        assert CEL_RULES_KEY not in spec_property(name), f"spec.{name} should stay changeable"


def test_status_conditions_are_map_keyed_by_type() -> None:
    status = build_crd(CLIP_TRAINING_JOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {"type", "status", "reason", "message", "lastTransitionTime"}
    assert status["properties"]["progress"]["properties"]["loss"]["type"] == "string"


def test_status_subresource_and_names() -> None:
    crd = build_crd(CLIP_TRAINING_JOB)
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == ["ctj"]
    assert crd["spec"]["names"]["categories"] == ["kubeclip", "all"]
    assert build_crd(CLIP_DATASET)["spec"]["names"]["shortNames"] == ["cds"]


@pytest.mark.parametrize("definition", RESOURCE_DEFINITIONS, ids=lambda definition: definition.kind)
def test_printer_columns_point_at_schema_fields(definition: ResourceDefinition) -> None:
    schema = build_crd(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for column in definition.printer_columns:
        if column.json_path.startswith(".metadata."):
            continue
        node = schema
        # A filter such as conditions[?(@.type=='Reachable')].status steps into the list's items.
        path = re.sub(r"\[\?\(@\.[a-zA-Z]+=='[A-Za-z]+'\)\]", "[]", column.json_path)
        for name in path.removeprefix(".").split("."):
            if name.endswith("[]"):
                node = node["properties"][name.removesuffix("[]")]["items"]
            else:
                node = node["properties"][name]
        assert node["type"] == column.type, f"column {column.name} shows {column.json_path}, a {node['type']}"


def test_resolved_settings_fit_status_model() -> None:
    settings = resolve_settings(load_job_file(EXAMPLE_JOB))
    status = ResolvedSettingsStatus.model_validate(settings.to_status())
    assert status.model_dump(mode="json", by_alias=True) == settings.to_status()


def test_union_of_two_types_raises_conversion_error() -> None:
    class Ambiguous(BaseModel):
        value: int | str

    with pytest.raises(SchemaConversionError, match=r"Ambiguous\.value: a union of 2 types cannot be expressed"):
        generate_model_schema(Ambiguous)


# The real API server.

REMOVE = object()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _install_crd(extensions: client.ApiextensionsV1Api, manifest: dict[str, Any]) -> None:
    # Create, or replace a copy left by an earlier module of the same session.
    try:
        extensions.create_custom_resource_definition(manifest)
    except ApiException as error:
        if error.status != 409:
            raise
        existing = extensions.read_custom_resource_definition(manifest["metadata"]["name"])
        replacement = copy.deepcopy(manifest)
        replacement["metadata"]["resourceVersion"] = existing.metadata.resource_version
        extensions.replace_custom_resource_definition(manifest["metadata"]["name"], replacement)


def _is_established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    conditions = extensions.read_custom_resource_definition(name).status.conditions or []
    return any(condition.type == "Established" and condition.status == "True" for condition in conditions)


@pytest.fixture(scope="module")
def installed_crds(cluster: ControlPlane) -> ControlPlane:
    extensions = client.ApiextensionsV1Api(cluster.api_client)
    for definition in RESOURCE_DEFINITIONS:
        manifest = yaml.safe_load((CRDS_DIR / definition.file_name).read_text(encoding="utf-8"))
        _install_crd(extensions, manifest)
    for definition in RESOURCE_DEFINITIONS:
        wait_for(
            lambda name=definition.crd_name: _is_established(extensions, name),
            f"CRD {definition.crd_name} is Established",
            timeout=ESTABLISHED_TIMEOUT_SECONDS,
        )
    return cluster


@pytest.fixture(scope="module")
def namespace(installed_crds: ControlPlane) -> Iterator[str]:
    name = _unique("crd-test")
    installed_crds.core.create_namespace({"metadata": {"name": name}})
    yield name
    installed_crds.core.delete_namespace(name)


@pytest.fixture
def custom_objects(installed_crds: ControlPlane) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(installed_crds.api_client)


def example_job(namespace: str, name: str | None = None) -> dict[str, Any]:
    document = yaml.safe_load(EXAMPLE_JOB.read_text(encoding="utf-8"))
    document["metadata"] = {"name": name or _unique("job"), "namespace": namespace}
    return document


def with_change(document: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """Return a copy of ``document`` with the dotted ``path`` set to ``value``, or removed when value is ``REMOVE``."""
    changed = copy.deepcopy(document)
    *parents, leaf = path.split(".")
    node = changed
    for parent in parents:
        node = node.setdefault(parent, {})
    if value is REMOVE:
        del node[leaf]
    else:
        node[leaf] = value
    return changed


def create_job(custom_objects: client.CustomObjectsApi, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    namespace = body["metadata"]["namespace"]
    options = {"dry_run": "All"} if dry_run else {}
    return custom_objects.create_namespaced_custom_object(API_GROUP, VERSION, namespace, CLIP_TRAINING_JOB.plural, body, **options)


def api_rejection(call: Callable[[], object]) -> tuple[int, str]:
    """Run an API call that should fail and return its HTTP status and the Status message."""
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value.status, json.loads(caught.value.body)["message"]


@pytest.mark.controlplane
def test_crds_established_with_short_names(installed_crds: ControlPlane, namespace: str) -> None:
    for short_name in ("ctj", "cds"):
        result = kubectl(installed_crds, "get", short_name, "-n", namespace)
        assert result.returncode == 0, result.stderr


@pytest.mark.controlplane
def test_example_job_accepted_by_dry_run(custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    created = create_job(custom_objects, example_job(namespace), dry_run=True)
    assert created["spec"]["training"]["learningRate"] == "5e-4"
    assert created["spec"]["training"]["saveSteps"] == 50


@pytest.mark.controlplane
def test_server_applies_schema_defaults(custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    body = example_job(namespace)
    body = with_change(body, "spec.training", REMOVE)
    body = with_change(body, "spec.dataset.trainSplitRatio", REMOVE)
    body = with_change(body, "spec.dataset.validationSplitRatio", REMOVE)
    created = create_job(custom_objects, body)
    spec = created["spec"]
    assert spec["training"]["saveSteps"] == 100
    assert spec["training"]["weightDecay"] == "0.1"
    assert spec["dataset"]["trainSplitRatio"] == 0.9
    assert spec["model"]["baseModel"] == "FacebookAI/roberta-base"
    assert spec["infrastructure"]["numNodes"] == 1
    assert spec["suspend"] is False
    # Recommended settings stay unset, so the operator can fill them for the base model.
    assert "learningRate" not in spec["training"]
    assert "epochs" not in spec["training"]


CEL_REJECTIONS = [
    ("spec.infrastructure.numNodes", 2, "spec.infrastructure.numNodes: Invalid value: 2: distributed training is not supported"),
    ("spec.infrastructure.gpusPerNode", 4, "spec.infrastructure.gpusPerNode: Invalid value: 4: distributed training is not supported"),
    ("spec.model.lora", {"r": 8}, "spec.model.lora: Forbidden: LoRA is not supported because kubeclip fine-tunes both encoders fully; remove spec.model.lora"),
    ("spec.dataset.promptTemplate", "a photo", "spec.dataset.promptTemplate must contain {caption} exactly once"),
    ("spec.dataset.promptTemplate", "{caption} and {caption}", "spec.dataset.promptTemplate must contain {caption} exactly once"),
    ("spec.dataset.trainSplitRatio", 0.5, "spec.dataset.trainSplitRatio and spec.dataset.validationSplitRatio must sum to 1"),
    ("spec.dataset.datasetRef", {"name": "flickr"}, "set exactly one of spec.dataset.source (an inline dataset) and spec.dataset.datasetRef"),
    ("spec.dataset.source", REMOVE, "set exactly one of spec.dataset.source (an inline dataset) and spec.dataset.datasetRef"),
    ("spec.dataset.source", {"uri": "s3://bucket/data.zip"}, "spec.dataset.source.region: Required value: region is required when the source uri starts with s3://"),
]


@pytest.mark.controlplane
@pytest.mark.parametrize("path, value, message", CEL_REJECTIONS, ids=[f"{path}-{index}" for index, (path, _, _) in enumerate(CEL_REJECTIONS)])
def test_cel_rule_rejects_invalid_job(custom_objects: client.CustomObjectsApi, namespace: str, path: str, value: object, message: str) -> None:
    body = with_change(example_job(namespace), path, value)
    status, text = api_rejection(lambda: create_job(custom_objects, body))
    assert status == HTTP_UNPROCESSABLE_ENTITY
    assert message in text


@pytest.mark.controlplane
def test_s3_source_with_region_accepted(custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    body = with_change(example_job(namespace), "spec.dataset.source", {"uri": "s3://bucket/data.zip", "region": "eu-west-1"})
    assert create_job(custom_objects, body, dry_run=True)["spec"]["dataset"]["source"]["region"] == "eu-west-1"


@pytest.mark.controlplane
def test_gpu_type_outside_enum_rejected(custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    body = with_change(example_job(namespace), "spec.infrastructure.gpuType", "L40S")
    status, text = api_rejection(lambda: create_job(custom_objects, body))
    assert status == HTTP_UNPROCESSABLE_ENTITY
    assert 'spec.infrastructure.gpuType: Unsupported value: "L40S"' in text
    assert '"H100", "A100", "L40"' in text


IMMUTABLE_CHANGES = [
    ("model", {"baseModel": "google-bert/bert-base-uncased"}),
    ("dataset", {"source": {"uri": "builtin://other"}}),
    ("infrastructure", {"gpuType": "H100"}),
]


@pytest.mark.controlplane
@pytest.mark.parametrize("field, change", IMMUTABLE_CHANGES, ids=[field for field, _ in IMMUTABLE_CHANGES])
def test_immutable_field_change_rejected(custom_objects: client.CustomObjectsApi, namespace: str, field: str, change: dict[str, Any]) -> None:
    created = create_job(custom_objects, example_job(namespace))
    name = created["metadata"]["name"]
    patch = {"spec": {field: change}}
    status, text = api_rejection(
        lambda: custom_objects.patch_namespaced_custom_object(API_GROUP, VERSION, namespace, CLIP_TRAINING_JOB.plural, name, patch)
    )
    assert status == HTTP_UNPROCESSABLE_ENTITY
    assert f"spec.{field}: Invalid value: spec.{field} is immutable after the job is created; delete the job and create it again" in text


@pytest.mark.controlplane
def test_suspend_and_training_change_accepted(custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    created = create_job(custom_objects, example_job(namespace))
    name = created["metadata"]["name"]
    patch = {"spec": {"suspend": True, "training": {"saveSteps": 10}}}
    patched = custom_objects.patch_namespaced_custom_object(API_GROUP, VERSION, namespace, CLIP_TRAINING_JOB.plural, name, patch)
    assert patched["spec"]["suspend"] is True
    assert patched["spec"]["training"]["saveSteps"] == 10


@pytest.mark.controlplane
def test_generated_status_survives_status_subresource(
    installed_crds: ControlPlane, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    created = create_job(custom_objects, example_job(namespace))
    name = created["metadata"]["name"]
    status = ClipTrainingJobStatus(
        phase=JobPhase.RUNNING,
        conditions=[
            Condition(
                type=ConditionType.RUNNING.value,
                status=ConditionStatus.TRUE,
                reason=ConditionReason.TRAINER_RUNNING.value,
                message="The trainer pod is running on node kwok-l40-0.",
                last_transition_time=TRANSITION_TIME,
                observed_generation=1,
            ),
            Condition(
                type=ConditionType.FAILED.value,
                status=ConditionStatus.FALSE,
                reason=ConditionReason.BACKOFF_LIMIT_EXCEEDED.value,
                message="The trainer has not failed.",
                last_transition_time=TRANSITION_TIME,
            ),
        ],
        observed_generation=1,
        progress=TrainingProgress(step=40, total_steps=200, loss="2.0794", progress_percentage=20),
        resolved_settings=ResolvedSettingsStatus.model_validate(resolve_settings(load_job_file(EXAMPLE_JOB)).to_status()),
    )
    body = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    patched = custom_objects.patch_namespaced_custom_object_status(API_GROUP, VERSION, namespace, CLIP_TRAINING_JOB.plural, name, body)
    assert patched["status"] == body["status"]

    # The printer columns read the status the operator writes.
    table = kubectl(installed_crds, "get", "cliptrainingjob", name, "-n", namespace)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "GPU", "CLUSTER", "PROGRESS", "LOSS", "AGE"]
    # A Managed job has no clusterRef, so the Cluster column is blank.
    assert row.split()[:5] == [name, "Running", "L40", "20", "2.0794"]


@pytest.mark.controlplane
def test_clip_dataset_accepted_and_checked(installed_crds: ControlPlane, custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    dataset = {
        "apiVersion": f"{API_GROUP}/{VERSION}",
        "kind": CLIP_DATASET.kind,
        "metadata": {"name": _unique("dataset"), "namespace": namespace},
        "spec": {"description": "Photos with captions.", "source": {"uri": "gs://bucket/photos.zip"}},
    }
    created = custom_objects.create_namespaced_custom_object(API_GROUP, VERSION, namespace, CLIP_DATASET.plural, dataset)
    assert created["spec"]["type"] == "ZipJsonl"

    dataset_without_region = with_change(dataset, "spec.source.uri", "s3://bucket/photos.zip")
    dataset_without_region["metadata"]["name"] = _unique("dataset")
    status, text = api_rejection(
        lambda: custom_objects.create_namespaced_custom_object(API_GROUP, VERSION, namespace, CLIP_DATASET.plural, dataset_without_region)
    )
    assert status == HTTP_UNPROCESSABLE_ENTITY
    assert "spec.source.region: Required value: region is required" in text


@pytest.mark.controlplane
def test_explain_prints_field_description(installed_crds: ControlPlane) -> None:
    outputs: list[str] = []

    def explain_shows_description() -> bool:
        result = kubectl(installed_crds, "explain", "cliptrainingjob.spec.training.learningRate")
        outputs.append(result.stdout + result.stderr)
        return result.returncode == 0 and "Peak learning rate as a decimal string" in result.stdout

    wait_for(explain_shows_description, "kubectl explain shows spec.training.learningRate", timeout=EXPLAIN_TIMEOUT_SECONDS)
    assert "FIELD: learningRate <string>" in outputs[-1]


CLUSTER_REJECTIONS = [
    ({"type": "BringYourOwn", "gpuPools": [{"gpuType": "L40", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40"}}]},
     "a BringYourOwn cluster needs spec.kubeconfigSecretRef"),
    ({"type": "Managed", "kubeconfigSecretRef": {"name": "k", "namespace": "kubeclip-system"},
      "gpuPools": [{"gpuType": "L40", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40"}}]},
     "Managed or Standalone clusters must not set it"),
    ({"type": "Managed", "gpuPools": [{"gpuType": "L40", "nodeSelector": {}}]}, "spec.gpuPools[0].nodeSelector: Invalid value"),
    ({"type": "Managed", "gpuPools": [{"gpuType": "L40S", "nodeSelector": {"a": "b"}}]}, 'spec.gpuPools[0].gpuType: Unsupported value: "L40S"'),
]  # fmt: skip


@pytest.mark.controlplane
@pytest.mark.parametrize("spec, message", CLUSTER_REJECTIONS, ids=[str(index) for index in range(len(CLUSTER_REJECTIONS))])
def test_kubectl_apply_rejects_invalid_cluster(installed_crds: ControlPlane, tmp_path: Path, spec: dict[str, Any], message: str) -> None:
    manifest = tmp_path / "cluster.json"
    manifest.write_text(json.dumps({"apiVersion": f"{API_GROUP}/{VERSION}", "kind": "ClipCluster", "metadata": {"name": _unique("cluster")}, "spec": spec}))
    result = kubectl(installed_crds, "apply", "-f", str(manifest))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
