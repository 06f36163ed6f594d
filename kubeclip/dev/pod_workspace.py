"""Turns a pod's container into a local command line, environment and folders.

Used by ``kubeclip.dev.pod_runner.PodRunner``, which plays the kubelet for the trainer
pods that kwok binds to simulated GPU nodes. ``prepare_container`` does what a kubelet
does before it starts a container, with local folders in place of mounts:

- volumes become folders under the pod's folder: ConfigMap and Secret volumes hold their
  keys (or ``items``) as files, emptyDir is an empty folder, a PersistentVolumeClaim is
  ``CLAIMS_DIR/CLAIM`` shared by every pod of the claim, and the projected
  ServiceAccount volume (``kube-api-access-*``) is the ServiceAccount folder below;
- ``env`` and ``envFrom`` are resolved through the API (ConfigMap and Secret keys,
  honouring ``optional``, and the pod fields of ``fieldRef``), and ``$(VAR)`` references
  are expanded as the kubelet expands them;
- a command, argument or variable that starts with a mount path (also after ``--flag=``)
  is rewritten to the local folder of that mount;
- unless ``automountServiceAccountToken`` is false, a token bound to the pod comes from
  the TokenRequest API and is written with ``ca.crt`` and ``namespace`` into a folder
  named by ``KUBECLIP_SERVICE_ACCOUNT_DIR``, and ``KUBERNETES_SERVICE_HOST``/``PORT``
  name the development cluster's API server.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

#: Variable naming the ServiceAccount folder, read by the trainer's progress writer.
SERVICE_ACCOUNT_DIR_ENV = "KUBECLIP_SERVICE_ACCOUNT_DIR"
#: Lifetime requested for ServiceAccount tokens; the API server's minimum is 600 s.
#: NOTE: the runner never renews the token, so a process that runs longer gets HTTP 401.
TOKEN_EXPIRATION_SECONDS = 3600
#: File mode of ConfigMap and Secret files when the volume sets none (Kubernetes' default, 0644).
DEFAULT_FILE_MODE = 0o644
_PYTHON_COMMANDS = ("python", "python3")
_VARIABLE_REFERENCE = re.compile(r"\$(\$|\(([^)]*)\))")


class PodSetupError(Exception):
    """A container cannot start yet or at all: a referenced object or key is missing, or the spec uses something unsupported."""


@dataclass(frozen=True)
class ApiServer:
    """The development cluster's API server address for processes, and the CA that signed its certificate."""

    host: str
    port: int
    ca_certificate: Path


@dataclass(frozen=True)
class LocalContainer:
    """A container ready to run as a local process."""

    command: list[str]
    env: dict[str, str]
    cwd: Path
    #: Mount path -> local folder or file, longest mount path first.
    mounts: dict[str, Path]
    #: Lines for the pod's log about what the runner left out (never values).
    notes: tuple[str, ...] = ()


def prepare_container(
    core: client.CoreV1Api,
    pod: client.V1Pod,
    *,
    pod_dir: Path,
    claims_dir: Path,
    api_server: ApiServer,
    extra_env: Mapping[str, str],
) -> LocalContainer:
    """Resolve the single container of ``pod`` into a local command, environment and folders.

    Raises:
        PodSetupError: the pod has more than one container or no command, a referenced
            ConfigMap, Secret or key that is not optional is missing, or a volume type or
            field reference is not supported here.
    """
    containers = pod.spec.containers or []
    if len(containers) != 1:
        raise PodSetupError(f"pod {_pod_reference(pod)} has {len(containers)} containers; the pod runner runs pods with exactly one")
    container = containers[0]
    if not container.command:
        raise PodSetupError(f"container {container.name} of pod {_pod_reference(pod)} has no command; the pod runner cannot know the image's entrypoint")
    notes: list[str] = []

    # 1. The ServiceAccount folder, then the volumes and the mount points that map onto them.
    service_account_dir = None
    if _automounts_token(core, pod):
        service_account_dir = write_service_account_folder(core, pod, pod_dir / "serviceaccount", api_server.ca_certificate)
    volumes = {volume.name: materialize_volume(core, pod, volume, pod_dir / "volumes", claims_dir, service_account_dir) for volume in pod.spec.volumes or []}
    mounts = map_mounts(container, volumes, pod)

    # 2. The environment: a minimal base, the runner's extras, the API server, then the container's own.
    home = pod_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONUNBUFFERED": "1", **extra_env}
    env.update(KUBERNETES_SERVICE_HOST=api_server.host, KUBERNETES_SERVICE_PORT=str(api_server.port))
    if service_account_dir is not None:
        env[SERVICE_ACCOUNT_DIR_ENV] = str(service_account_dir)
    container_env = resolve_container_env(core, pod, container, base=env, notes=notes)
    env.update({name: rewrite_path(value, mounts) for name, value in container_env.items()})

    # 3. The command line, with $(VAR) expanded, paths rewritten and python taken from this virtual environment.
    command = [rewrite_path(expand_references(part, env), mounts) for part in [*container.command, *(container.args or [])]]
    if command[0] in _PYTHON_COMMANDS:
        command[0] = sys.executable
    cwd = Path(rewrite_path(container.working_dir, mounts)) if container.working_dir else pod_dir / "workdir"
    cwd.mkdir(parents=True, exist_ok=True)
    return LocalContainer(command, env, cwd, mounts, tuple(notes))


# -- environment --------------------------------------------------------------------


def resolve_container_env(core: client.CoreV1Api, pod: client.V1Pod, container: client.V1Container, *, base: Mapping[str, str], notes: list[str]) -> dict[str, str]:
    """Return the variables of ``envFrom`` and then ``env``, in the kubelet's order, with ``$(VAR)`` expanded against ``base`` and earlier ones."""
    namespace = pod.metadata.namespace
    resolved: dict[str, str] = {}
    for source in container.env_from or []:
        prefix = source.prefix or ""
        for key, value in _env_from_source(core, namespace, source).items():
            resolved[prefix + key] = value
    for variable in container.env or []:
        if variable.value_from is None:
            resolved[variable.name] = expand_references(variable.value or "", {**base, **resolved})
            continue
        value = _value_from(core, pod, variable, notes)
        if value is not None:
            resolved[variable.name] = value
    return resolved


def _env_from_source(core: client.CoreV1Api, namespace: str, source: client.V1EnvFromSource) -> dict[str, str]:
    if source.config_map_ref is not None:
        reference = source.config_map_ref
        data = _config_map_data(core, namespace, reference.name, optional=bool(reference.optional)) or {}
        return {key: value.decode("utf-8") for key, value in data.items()}
    if source.secret_ref is not None:
        reference = source.secret_ref
        data = _secret_data(core, namespace, reference.name, optional=bool(reference.optional)) or {}
        return {key: value.decode("utf-8") for key, value in data.items()}
    raise PodSetupError(f"unsupported envFrom source {source.to_dict()} in namespace {namespace}")


def _value_from(core: client.CoreV1Api, pod: client.V1Pod, variable: client.V1EnvVar, notes: list[str]) -> str | None:
    """Return the value of ``valueFrom``, or None when an optional key is missing or the source is skipped."""
    source = variable.value_from
    namespace = pod.metadata.namespace
    if source.config_map_key_ref is not None:
        reference = source.config_map_key_ref
        data = _config_map_data(core, namespace, reference.name, optional=bool(reference.optional))
        return _key_of(data, reference.key, f"ConfigMap {namespace}/{reference.name}", variable.name, bool(reference.optional))
    if source.secret_key_ref is not None:
        reference = source.secret_key_ref
        data = _secret_data(core, namespace, reference.name, optional=bool(reference.optional))
        return _key_of(data, reference.key, f"Secret {namespace}/{reference.name}", variable.name, bool(reference.optional))
    if source.field_ref is not None:
        return pod_field(pod, source.field_ref.field_path)
    if source.resource_field_ref is not None:
        notes.append(f"variable {variable.name} left out: resourceFieldRef is not supported by the pod runner")
        return None
    raise PodSetupError(f"variable {variable.name} of pod {_pod_reference(pod)} has an unsupported valueFrom")


def _key_of(data: Mapping[str, bytes] | None, key: str, owner: str, variable: str, optional: bool) -> str | None:
    if data is not None and key in data:
        return data[key].decode("utf-8")
    if optional:
        return None
    raise PodSetupError(f"variable {variable} needs key {key!r} of {owner}, which is missing; create it or mark the reference optional")


def pod_field(pod: client.V1Pod, field_path: str) -> str:
    """Return the value of a downward API ``fieldRef`` such as ``metadata.name`` or ``metadata.labels['app']``."""
    simple = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": pod.status.pod_ip if pod.status else None,
        "status.hostIP": pod.status.host_ip if pod.status else None,
    }
    if field_path in simple:
        return simple[field_path] or ""
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
    if match:
        values = (pod.metadata.labels if match.group(1) == "labels" else pod.metadata.annotations) or {}
        return values.get(match.group(2), "")
    raise PodSetupError(f"fieldRef {field_path!r} of pod {_pod_reference(pod)} is not supported; use one of {', '.join(simple)}, metadata.labels['KEY'] or metadata.annotations['KEY']")


def expand_references(value: str, env: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` from ``env`` as the kubelet does: unknown names stay as written, and ``$$`` stands for ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        return env.get(match.group(2), match.group(0))

    return _VARIABLE_REFERENCE.sub(replace, value)


def rewrite_path(value: str, mounts: Mapping[str, Path]) -> str:
    """Point ``value`` into the local folder of the mount it starts with; ``--flag=PATH`` counts too."""
    flag, separator, path = value.partition("=")
    if separator and flag.startswith("-"):
        rewritten = rewrite_path(path, mounts)
        return value if rewritten == path else f"{flag}={rewritten}"
    for mount_path, local in mounts.items():
        root = mount_path.rstrip("/")
        if root and (value == root or value.startswith(root + "/")):
            return str(local) + value[len(root) :]
    return value


# -- volumes ------------------------------------------------------------------------------


def materialize_volume(core: client.CoreV1Api, pod: client.V1Pod, volume: client.V1Volume, volumes_dir: Path, claims_dir: Path, service_account_dir: Path | None) -> Path:
    """Create the local folder of ``volume`` and return it."""
    namespace = pod.metadata.namespace
    if volume.persistent_volume_claim is not None:
        folder = claims_dir / volume.persistent_volume_claim.claim_name
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    if volume.projected is not None and any(source.service_account_token is not None for source in volume.projected.sources or []):
        if service_account_dir is None:
            raise PodSetupError(f"volume {volume.name} of pod {_pod_reference(pod)} projects a ServiceAccount token, but automountServiceAccountToken is false")
        return service_account_dir
    folder = volumes_dir / volume.name
    folder.mkdir(parents=True, exist_ok=True)
    if volume.empty_dir is not None:
        return folder
    if volume.config_map is not None:
        source = volume.config_map
        _write_keys(folder, _config_map_data(core, namespace, source.name, optional=bool(source.optional)), source.items, source.default_mode, f"ConfigMap {namespace}/{source.name}", bool(source.optional))
        return folder
    if volume.secret is not None:
        source = volume.secret
        _write_keys(folder, _secret_data(core, namespace, source.secret_name, optional=bool(source.optional)), source.items, source.default_mode, f"Secret {namespace}/{source.secret_name}", bool(source.optional))
        return folder
    kind = next((key for key, value in volume.to_dict().items() if key != "name" and value is not None), "unknown")
    raise PodSetupError(f"volume {volume.name} of pod {_pod_reference(pod)} has type {kind}, which the pod runner does not support; use configMap, secret, emptyDir or persistentVolumeClaim")


def _write_keys(folder: Path, data: Mapping[str, bytes] | None, items: list[client.V1KeyToPath] | None, default_mode: int | None, owner: str, optional: bool) -> None:
    if data is None:
        return  # an optional object that does not exist: an empty folder, as the kubelet mounts it
    selected = [(item.key, item.path, item.mode) for item in items] if items else [(key, key, None) for key in data]
    for key, relative, mode in selected:
        if key not in data:
            if optional:
                continue
            raise PodSetupError(f"volume item {key!r} is missing from {owner}; add the key or mark the volume optional")
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[key])
        if mode is None:
            mode = default_mode if default_mode is not None else DEFAULT_FILE_MODE
        path.chmod(mode)


def map_mounts(container: client.V1Container, volumes: Mapping[str, Path], pod: client.V1Pod) -> dict[str, Path]:
    """Return mount path -> local path (with ``subPath``), longest mount path first so nested mounts win."""
    mounts: dict[str, Path] = {}
    for mount in container.volume_mounts or []:
        if mount.name not in volumes:
            raise PodSetupError(f"volume mount {mount.name} of pod {_pod_reference(pod)} names no volume of the pod")
        mounts[mount.mount_path] = volumes[mount.name] / mount.sub_path if mount.sub_path else volumes[mount.name]
    return dict(sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True))


# -- ConfigMaps, Secrets and the ServiceAccount ---------------------------------------------


def _config_map_data(core: client.CoreV1Api, namespace: str, name: str, *, optional: bool) -> dict[str, bytes] | None:
    """Return the keys of ConfigMap ``data`` and ``binaryData`` as bytes; None for a missing optional one."""
    config_map = _read_or_none(lambda: core.read_namespaced_config_map(name, namespace), f"ConfigMap {namespace}/{name}", optional)
    if config_map is None:
        return None
    data = {key: value.encode("utf-8") for key, value in (config_map.data or {}).items()}
    data.update({key: base64.b64decode(value) for key, value in (config_map.binary_data or {}).items()})
    return data


def _secret_data(core: client.CoreV1Api, namespace: str, name: str, *, optional: bool) -> dict[str, bytes] | None:
    """Return the decoded keys of Secret ``data``; None for a missing optional one."""
    secret = _read_or_none(lambda: core.read_namespaced_secret(name, namespace), f"Secret {namespace}/{name}", optional)
    if secret is None:
        return None
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def _read_or_none(read, description: str, optional: bool):
    try:
        return read()
    except ApiException as error:
        if error.status != 404:
            raise
    if optional:
        return None
    raise PodSetupError(f"{description} is not found; the container waits for it, as a kubelet does")


def _automounts_token(core: client.CoreV1Api, pod: client.V1Pod) -> bool:
    """Apply the pod's automountServiceAccountToken, else its ServiceAccount's, else true."""
    if pod.spec.automount_service_account_token is not None:
        return pod.spec.automount_service_account_token
    account = pod.spec.service_account_name or "default"
    service_account = _read_or_none(lambda: core.read_namespaced_service_account(account, pod.metadata.namespace), f"ServiceAccount {pod.metadata.namespace}/{account}", optional=False)
    return service_account.automount_service_account_token is not False


def write_service_account_folder(core: client.CoreV1Api, pod: client.V1Pod, folder: Path, ca_certificate: Path) -> Path:
    """Write ``token`` (from the TokenRequest API, bound to the pod), ``ca.crt`` and ``namespace`` into ``folder``."""
    account = pod.spec.service_account_name or "default"
    body = {
        "spec": {
            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": pod.metadata.uid},
        }
    }
    try:
        request = core.create_namespaced_service_account_token(account, pod.metadata.namespace, body)
    except ApiException as error:
        raise PodSetupError(f"TokenRequest for ServiceAccount {pod.metadata.namespace}/{account} failed: HTTP {error.status} {error.reason}") from error
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text(request.status.token, encoding="utf-8")
    (folder / "token").chmod(0o600)
    (folder / "ca.crt").write_bytes(ca_certificate.read_bytes())
    (folder / "namespace").write_text(pod.metadata.namespace, encoding="utf-8")
    return folder


def _pod_reference(pod: client.V1Pod) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"
