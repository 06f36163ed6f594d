"""Generate the CustomResourceDefinitions of kubeclip from the pydantic API types.

``python -m kubeclip.api.crd --output crds/ --output charts/kubeclip/crds/`` writes the
committed CRD files and the Helm chart's copies of them, and ``tests/api/test_crd.py``
regenerates them to check that they match the models. The pydantic JSON schema is
turned into the structural OpenAPI v3 schema that the API server requires. Every
``$ref`` is inlined, and numeric exclusive bounds take the OpenAPI v3.0 boolean form.
``X | None`` becomes ``X``, because the API server prunes null values of fields that are
not nullable, so an explicit null means the same as an absent field. A keyword the API
server does not support raises ``SchemaConversionError`` instead of being dropped.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from kubeclip.api.cluster import CLUSTER_KIND, ClipClusterSpec, ClipClusterStatus
from kubeclip.api.job import API_GROUP, API_VERSION, CEL_RULES_KEY, DATASET_KIND, KIND, ClipDatasetSpec, ClipTrainingJobSpec
from kubeclip.api.status import ClipTrainingJobStatus

REGENERATE_COMMAND = "python -m kubeclip.api.crd --output crds/ --output charts/kubeclip/crds/"
VERSION = API_VERSION.removeprefix(f"{API_GROUP}/")
JsonSchema = dict[str, Any]

# Keywords of the API server's JSONSchemaProps that the conversion emits, in the order
# they are written. "title" is the only pydantic keyword dropped on purpose.
_SCHEMA_KEYWORDS = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    CEL_RULES_KEY,
)
_DROPPED_KEYWORDS = frozenset({"title"})
_NULL_SCHEMA = {"type": "null"}


class SchemaConversionError(ValueError):
    """A pydantic schema construct that a structural CRD schema cannot express."""


@dataclasses.dataclass(frozen=True)
class PrinterColumn:
    """One column of ``kubectl get``."""

    name: str
    type: str
    json_path: str
    description: str

    def to_manifest(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "jsonPath": self.json_path, "description": self.description}


@dataclasses.dataclass(frozen=True)
class ResourceDefinition:
    """The names and models of one namespaced custom resource."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    description: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel] | None
    printer_columns: tuple[PrinterColumn, ...]
    scope: str = "Namespaced"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{API_GROUP}"

    @property
    def file_name(self) -> str:
        return f"{API_GROUP}_{self.plural}.yaml"


_AGE_COLUMN = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since the object was created.")

CLIP_TRAINING_JOB = ResourceDefinition(
    kind=KIND,
    plural="cliptrainingjobs",
    short_names=("ctj",),
    categories=("kubeclip", "all"),
    description="ClipTrainingJob fine-tunes a CLIP-style image-text dual encoder on one GPU.",
    spec_model=ClipTrainingJobSpec,
    status_model=ClipTrainingJobStatus,
    printer_columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Summary of the job's conditions."),
        PrinterColumn("GPU", "string", ".spec.infrastructure.gpuType", "GPU model the trainer runs on."),
        PrinterColumn("Cluster", "string", ".status.workload.cluster", "ClipCluster the trainer runs in."),
        PrinterColumn("Progress", "integer", ".status.progress.progressPercentage", "Share of all training steps done, in percent."),
        PrinterColumn("Loss", "string", ".status.progress.loss", "Training loss at the latest logging step."),
        _AGE_COLUMN,
    ),
)

CLIP_DATASET = ResourceDefinition(
    kind=DATASET_KIND,
    plural="clipdatasets",
    short_names=("cds",),
    categories=("kubeclip",),
    description="ClipDataset registers a dataset of images and captions that jobs in the same namespace use through spec.dataset.datasetRef.",
    spec_model=ClipDatasetSpec,
    status_model=None,
    printer_columns=(
        PrinterColumn("Type", "string", ".spec.type", "Layout of the dataset archive."),
        PrinterColumn("URI", "string", ".spec.source.uri", "Location of the dataset archive."),
        _AGE_COLUMN,
    ),
)

CLIP_CLUSTER = ResourceDefinition(
    kind=CLUSTER_KIND,
    plural="clipclusters",
    short_names=("ccl",),
    categories=("kubeclip",),
    description="ClipCluster registers a cluster where kubeclip trainers run (Managed, BringYourOwn or Standalone) and the GPU pools it offers.",
    spec_model=ClipClusterSpec,
    status_model=ClipClusterStatus,
    printer_columns=(
        PrinterColumn("Type", "string", ".spec.type", "Managed, BringYourOwn or Standalone."),
        PrinterColumn("Namespace", "string", ".spec.namespace", "Namespace the trainers run in."),
        PrinterColumn("Reachable", "string", ".status.conditions[?(@.type=='Reachable')].status", "Whether the operator reaches the cluster."),
        _AGE_COLUMN,
    ),
    scope="Cluster",
)

RESOURCE_DEFINITIONS = (CLIP_TRAINING_JOB, CLIP_DATASET, CLIP_CLUSTER)


class _KubernetesJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON schema generator with the defaults a CRD needs."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        """Return the schema default of a field, or ``NoDefault`` when the API server should set none.

        A None default is left out, because the recommendation table (or the operator) fills
        such fields. A nested model built by ``default_factory`` defaults to ``{}``, so the
        API server creates the object and then applies the defaults of its fields.
        """
        factory = schema.get("default_factory")
        if factory is not None:
            is_model_factory = isinstance(factory, type) and issubclass(factory, BaseModel)
            return {} if is_model_factory else NoDefault
        default = schema.get("default", NoDefault)
        return NoDefault if default is None else default


def generate_model_schema(model: type[BaseModel]) -> JsonSchema:
    """Generate the structural schema of a pydantic model, with every reference inlined.

    Raises:
        SchemaConversionError: the model uses a construct that a CRD schema cannot express.
    """
    pydantic_schema = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_KubernetesJsonSchema)
    definitions = pydantic_schema.pop("$defs", {})
    return _convert_node(pydantic_schema, definitions, model.__name__)


def _convert_node(node: JsonSchema, definitions: dict[str, JsonSchema], path: str) -> JsonSchema:
    # Inline references and unwrap X | None first, so the node left has one type.
    node = _unwrap_optional(_inline_reference(node, definitions, path), definitions, path)
    converted = _convert_keywords(node, path)

    # Convert the nested schemas.
    if "properties" in converted:
        converted["properties"] = {
            name: _convert_node(child, definitions, f"{path}.{name}") for name, child in converted["properties"].items()
        }
    if "items" in converted:
        converted["items"] = _convert_node(converted["items"], definitions, f"{path}[]")
    if isinstance(converted.get("additionalProperties"), dict):
        converted["additionalProperties"] = _convert_node(converted["additionalProperties"], definitions, f"{path}{{}}")
    return {keyword: converted[keyword] for keyword in _SCHEMA_KEYWORDS if keyword in converted}


def _inline_reference(node: JsonSchema, definitions: dict[str, JsonSchema], path: str) -> JsonSchema:
    reference = node.get("$ref")
    if reference is None:
        return node
    name = reference.removeprefix("#/$defs/")
    if name not in definitions:
        raise SchemaConversionError(f"{path}: reference {reference!r} is not in the schema's $defs; only local references can be inlined")
    siblings = {key: value for key, value in node.items() if key != "$ref"}
    # A copy per use, so YAML does not write a definition used twice as an anchor and alias.
    definition = copy.deepcopy(definitions[name])
    return _inline_reference(_merge_schemas(definition, siblings), definitions, path)


def _unwrap_optional(node: JsonSchema, definitions: dict[str, JsonSchema], path: str) -> JsonSchema:
    if "anyOf" not in node:
        return node
    members = [member for member in node["anyOf"] if member != _NULL_SCHEMA]
    if len(members) != 1:
        raise SchemaConversionError(
            f"{path}: a union of {len(members)} types cannot be expressed in a structural CRD schema; give the field one type (optionally with None)"
        )
    siblings = {key: value for key, value in node.items() if key != "anyOf"}
    member = _inline_reference(members[0], definitions, path)
    return _merge_schemas(member, siblings)


def _merge_schemas(base: JsonSchema, overlay: JsonSchema) -> JsonSchema:
    """Overlay a field's keywords on its type's schema; the CEL rules of both are kept, the type's first."""
    merged = {**base, **overlay}
    if CEL_RULES_KEY in base and CEL_RULES_KEY in overlay:
        merged[CEL_RULES_KEY] = [*base[CEL_RULES_KEY], *overlay[CEL_RULES_KEY]]
    return merged


def _convert_keywords(node: JsonSchema, path: str) -> JsonSchema:
    converted = {key: value for key, value in node.items() if key not in _DROPPED_KEYWORDS}

    # OpenAPI v3.0 writes an exclusive bound as the bound plus a boolean flag.
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if exclusive in converted and not isinstance(converted[exclusive], bool):
            converted[inclusive] = converted[exclusive]
            converted[exclusive] = True

    # A Literal becomes a one-value enum.
    if "const" in converted:
        converted["enum"] = [converted.pop("const")]

    # Structural schemas forbid additionalProperties: false (a closed object is already
    # closed by its properties) and express an open dict as preserved unknown fields.
    additional = converted.get("additionalProperties")
    if additional is False:
        del converted["additionalProperties"]
    elif additional is True:
        del converted["additionalProperties"]
        converted["x-kubernetes-preserve-unknown-fields"] = True

    unsupported = sorted(set(converted) - set(_SCHEMA_KEYWORDS))
    if unsupported:
        raise SchemaConversionError(
            f"{path}: JSON schema keywords {unsupported} have no equivalent in a CRD schema; "
            f"remove them from the model or teach kubeclip/api/crd.py to convert them"
        )
    return converted


def generate_resource_schema(definition: ResourceDefinition) -> JsonSchema:
    """Generate the openAPIV3Schema of a whole object: apiVersion, kind, metadata, spec and status."""
    properties: dict[str, JsonSchema] = {
        "apiVersion": {
            "description": "Versioned schema of this representation of the object; servers convert recognised schemas to the latest internal value.",
            "type": "string",
        },
        "kind": {"description": "REST resource this object represents, in CamelCase.", "type": "string"},
        # The API server validates metadata itself and allows no other schema for it.
        "metadata": {"type": "object"},
        "spec": generate_model_schema(definition.spec_model),
    }
    if definition.status_model is not None:
        properties["status"] = generate_model_schema(definition.status_model)
    return {"description": definition.description, "type": "object", "properties": properties, "required": ["spec"]}


def build_crd(definition: ResourceDefinition) -> dict[str, Any]:
    """Build the CustomResourceDefinition manifest (apiextensions.k8s.io/v1) of one resource."""
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": generate_resource_schema(definition)},
        "additionalPrinterColumns": [column.to_manifest() for column in definition.printer_columns],
    }
    if definition.status_model is not None:
        version["subresources"] = {"status": {}}
    names = {
        "kind": definition.kind,
        "listKind": f"{definition.kind}List",
        "plural": definition.plural,
        "singular": definition.kind.lower(),
        "shortNames": list(definition.short_names),
        "categories": list(definition.categories),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": definition.crd_name},
        "spec": {"group": API_GROUP, "names": names, "scope": definition.scope, "versions": [version]},
    }


def render_crd_file(definition: ResourceDefinition) -> str:
    """Render one CRD as YAML, headed by a comment that names its source and the command that regenerates it."""
    header = (
        f"# Generated from the pydantic models in kubeclip/api by kubeclip/api/crd.py. Do not edit by hand:\n"
        f"# change the models, then regenerate with\n"
        f"#   {REGENERATE_COMMAND}\n"
    )
    body = yaml.safe_dump(build_crd(definition), sort_keys=False, width=120, allow_unicode=True)
    return header + body


def render_crd_files() -> dict[str, str]:
    """Render every CRD, keyed by its file name in crds/."""
    return {definition.file_name: render_crd_file(definition) for definition in RESOURCE_DEFINITIONS}


def write_crd_files(output_dir: Path) -> list[Path]:
    """Write every CRD into ``output_dir``, creating it if needed, and return the paths written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render_crd_files().items():
        path = output_dir / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Write the CRD files into every folder given by --output."""
    parser = argparse.ArgumentParser(prog="python -m kubeclip.api.crd", description="Generate kubeclip's CRDs from the pydantic API types.")
    parser.add_argument(
        "--output",
        type=Path,
        action="append",
        required=True,
        help="Folder to write the CRD YAML files into, e.g. crds/. Repeat it to write the same files into several folders, "
        "such as crds/ and the Helm chart's charts/kubeclip/crds/.",
    )
    arguments = parser.parse_args(argv)
    for output_dir in arguments.output:
        for path in write_crd_files(output_dir):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
