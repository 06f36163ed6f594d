"""Kubeconfig files for the admin and the components of a development cluster.

``kubeclip.dev.cluster`` writes one per client identity; the admin's is what
``kubeclip dev cluster up`` prints. Certificates and keys are embedded as base64 data,
so a kubeconfig still works when copied elsewhere on the machine.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def build_kubeconfig(*, cluster_name: str, server: str, ca_pem: bytes, certificate_pem: bytes, key_pem: bytes, user: str) -> dict[str, Any]:
    """Return a kubeconfig with one cluster, one user and one current context, both named after them."""
    context = f"{user}@{cluster_name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": _base64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _base64(certificate_pem), "client-key-data": _base64(key_pem)}}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: Path, kubeconfig: dict[str, Any]) -> Path:
    """Write ``kubeconfig`` as YAML, readable by the owner only because it contains a private key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
    return path


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
