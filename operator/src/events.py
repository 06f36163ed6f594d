"""Post Kubernetes events on ClipTrainingJobs, so ``kubectl describe`` shows each transition and error."""

from __future__ import annotations

import logging
import socket
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.api.status import ConditionReason, ConditionStatus, ConditionType
from kubeclip.operator.conditions import Transition, now_iso

logger = logging.getLogger(__name__)

COMPONENT = "kubeclip-operator"
_MESSAGE_LIMIT = 1024
#: Reasons that mean the job cannot go on as it is; reported as Warning events.
_WARNING_REASONS = frozenset(
    reason.value
    for reason in (
        ConditionReason.INVALID_SPEC, ConditionReason.DATASET_NOT_FOUND, ConditionReason.CLUSTER_NOT_FOUND,
        ConditionReason.GPU_TYPE_NOT_OFFERED, ConditionReason.SECRET_NOT_FOUND, ConditionReason.CLUSTER_UNREACHABLE,
        ConditionReason.UNSCHEDULABLE, ConditionReason.IMAGE_PULL_FAILED, ConditionReason.RETRYING,
        ConditionReason.BACKOFF_LIMIT_EXCEEDED, ConditionReason.CONFIGURATION_ERROR, ConditionReason.WORKLOAD_DELETED,
    )
)  # fmt: skip


class EventRecorder:
    """Creates core/v1 Events whose involvedObject is the job."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)
        self._instance = socket.gethostname()

    def transitions(self, body: dict[str, Any], transitions: list[Transition]) -> None:
        for transition in transitions:
            if transition.status == ConditionStatus.FALSE and transition.type in (ConditionType.SUCCEEDED, ConditionType.FAILED):
                continue
            self.post(body, transition.reason, transition.message, warning=transition.reason in _WARNING_REASONS)

    def post(self, body: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        metadata = body["metadata"]
        stamp = now_iso()
        event = {
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "name": metadata["name"],
                "namespace": metadata["namespace"], "uid": metadata.get("uid"), "resourceVersion": metadata.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:_MESSAGE_LIMIT],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": f"kubeclip.dev/{COMPONENT}",
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }  # fmt: skip
        try:
            self._core.create_namespaced_event(metadata["namespace"], event)
        except ApiException as error:
            # An event is a courtesy; losing one must not fail the reconciliation.
            logger.warning("could not post event %s on %s/%s: %s %s", reason, metadata["namespace"], metadata["name"], error.status, error.reason)
