"""Settings of one operator process, from ``kubeclip operator`` options or the environment.

Each option has an environment variable of the same name in upper case with the prefix
``KUBECLIP_OPERATOR_`` (``--trainer-image`` is ``KUBECLIP_OPERATOR_TRAINER_IMAGE``), so the
Helm chart can set either. ``kubeclip.cli.operator`` applies the environment first and the
command-line options over it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from kubeclip import __version__

DEFAULT_TRAINER_IMAGE = f"ghcr.io/kubeclip/kubeclip:{__version__}"
DEFAULT_CLUSTER_NAME = "managed"
ENV_PREFIX = "KUBECLIP_OPERATOR_"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    """Options of the operator beyond the resources it watches."""

    #: Namespaces whose jobs this operator handles; empty means all. A comma-separated list in the environment.
    namespaces: tuple[str, ...] = ()
    #: Image of the trainer pods; the default is the image of this kubeclip version.
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    #: imagePullPolicy of the trainer container: Always, IfNotPresent or Never.
    image_pull_policy: str = "IfNotPresent"
    #: ClipCluster used by Managed jobs without spec.infrastructure.clusterRef.
    default_cluster: str = DEFAULT_CLUSTER_NAME
    #: Port of the Prometheus /metrics endpoint.
    metrics_port: int = 8080
    #: Port of the /healthz endpoint that Kopf serves for the liveness probe.
    health_port: int = 8081
    #: Seconds between two reconciliations of a job when nothing changes; changes wake it at once.
    resync_seconds: float = 30.0
    #: Seconds a watch may stay silent before the operator reconnects it.
    watch_timeout_seconds: int = 120
    #: Seconds the operator waits for a new connection's caches before it reconciles against them.
    cache_sync_timeout_seconds: float = 60.0
    #: Seconds a trainer pod stays on a NotReady or unreachable node before it is evicted and retried.
    node_lost_toleration_seconds: int = 60
    #: terminationGracePeriodSeconds of the trainer pod: the time the trainer has to write a checkpoint after SIGTERM.
    termination_grace_seconds: int = 120
    #: Log line format: text for people, json for log collectors.
    log_format: str = "text"
    #: Address the metrics and health endpoints bind to.
    bind_address: str = "0.0.0.0"

    def with_environment(self, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Return a copy with every field that has a KUBECLIP_OPERATOR_* variable replaced by its value.

        Raises:
            ValueError: the variable of a numeric or boolean field has a value of another type.
        """
        environ = os.environ if environ is None else environ
        changes: dict[str, object] = {}
        for field in dataclasses.fields(self):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None:
                continue
            changes[field.name] = _convert(field.name, raw, getattr(self, field.name))
        return dataclasses.replace(self, **changes)


def _convert(name: str, raw: str, current: object) -> object:
    """Convert ``raw`` to the type of the field's current value."""
    variable = f"{ENV_PREFIX}{name.upper()}"
    if isinstance(current, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    # bool is a subclass of int, so it is checked first.
    if isinstance(current, bool):
        word = raw.strip().lower()
        if word not in _TRUE_WORDS | _FALSE_WORDS:
            raise ValueError(f"{variable}={raw!r} is not a boolean; set it to true or false")
        return word in _TRUE_WORDS
    if isinstance(current, (int, float)):
        try:
            return type(current)(raw)
        except ValueError:
            kind = "an integer" if isinstance(current, int) else "a number"
            raise ValueError(f"{variable}={raw!r} is not {kind}; set it to {kind} such as {current}") from None
    return raw
