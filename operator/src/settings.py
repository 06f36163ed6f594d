"""Settings of one operator process, from ``kubeclip operator`` options or the environment.

Each option has an environment variable of the same name in upper case with the prefix
``KUBECLIP_OPERATOR_`` (``--trainer-image`` is ``KUBECLIP_OPERATOR_TRAINER_IMAGE``), so the
Helm chart can set either.
"""

from __future__ import annotations

import dataclasses
import os

from kubeclip import __version__

DEFAULT_TRAINER_IMAGE = f"ghcr.io/kubeclip/kubeclip:{__version__}"
DEFAULT_CLUSTER_NAME = "managed"
ENV_PREFIX = "KUBECLIP_OPERATOR_"


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    """What the operator needs beyond the resources it watches."""

    #: Namespaces whose jobs this operator handles; empty means all.
    namespaces: tuple[str, ...] = ()
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    #: ClipCluster used by Managed jobs without spec.infrastructure.clusterRef.
    default_cluster: str = DEFAULT_CLUSTER_NAME
    metrics_port: int = 8080
    health_port: int = 8081
    #: Seconds between two reconciliations of a job when nothing changes; changes wake it at once.
    resync_seconds: float = 30.0
    #: Seconds a watch may stay silent before the operator reconnects it.
    watch_timeout_seconds: int = 120
    #: Seconds the operator waits for a new connection's caches before it reconciles against them.
    cache_sync_timeout_seconds: float = 60.0
    #: Seconds a trainer pod stays on a NotReady or unreachable node before it is evicted and retried.
    node_lost_toleration_seconds: int = 60
    termination_grace_seconds: int = 120
    log_format: str = "text"
    #: Address the metrics and health endpoints bind to.
    bind_address: str = "0.0.0.0"

    def with_environment(self, environ: dict[str, str] | None = None) -> OperatorSettings:
        """Return a copy with every field that has a KUBECLIP_OPERATOR_* variable replaced by its value."""
        environ = os.environ if environ is None else environ
        changes: dict[str, object] = {}
        for field in dataclasses.fields(self):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None:
                continue
            changes[field.name] = _convert(field.name, raw, getattr(self, field.name))
        return dataclasses.replace(self, **changes)


def _convert(name: str, raw: str, current: object) -> object:
    try:
        if isinstance(current, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(current, bool):
            return raw.lower() in {"1", "true", "yes"}
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number; set it to a number such as {current}") from None
    return raw
