"""Post Kubernetes events on ClipTrainingJobs, so ``kubectl describe`` shows each transition and error.

The reconciler calls ``EventRecorder.transitions`` after each pass with the condition
transitions of that pass. Event reasons are the condition reasons.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from kubeclip.api.status import ConditionReason, ConditionStatus, ConditionType
from kubeclip.operator.conditions import Transition, now_iso

logger = logging.getLogger(__name__)

COMPONENT = "kubeclip-operator"
#: Seconds within which a second event with the same reason for the same job is not posted.
REPEAT_WINDOW_SECONDS = 60.0
#: Entries of the repeat memory above which expired ones are dropped.
RECENT_LIMIT = 10_000
_FINAL_REASONS = frozenset(
    reason.value for reason in (ConditionReason.TRAINING_COMPLETED, ConditionReason.BACKOFF_LIMIT_EXCEEDED, ConditionReason.CONFIGURATION_ERROR)
)
#: Characters kept of an event message: the limit that events.k8s.io/v1 sets on an event's note.
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


def is_warning(reason: str) -> bool:
    """Tell whether a condition reason means a problem the user must act on."""
    return reason in _WARNING_REASONS


class EventRecorder:
    """Creates core/v1 Events whose involvedObject is the job."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)
        self._instance = socket.gethostname()
        self._recent: dict[tuple[str, str, str], float] = {}
        self._recent_lock = threading.Lock()

    def transitions(self, body: dict[str, Any], transitions: list[Transition]) -> None:
        """Post one event per reason among the transitions of a pass.

        One change often moves several conditions with the same reason (a suspension sets
        Suspended and clears Running and Scheduled), and the first of them carries the most detail.
        A terminal condition going False is not news and posts nothing.
        """
        posted: set[str] = set()
        uid = body["metadata"].get("uid", "")
        for transition in transitions:
            if transition.status == ConditionStatus.FALSE and transition.type in (ConditionType.SUCCEEDED, ConditionType.FAILED):
                continue
            if transition.reason in posted or self._posted_recently(uid, transition.reason, transition.message):
                continue
            posted.add(transition.reason)
            self.post(body, transition.reason, transition.message, warning=is_warning(transition.reason))

    def _posted_recently(self, uid: str, reason: str, message: str) -> bool:
        """Whether this job got the same event within REPEAT_WINDOW_SECONDS; records the new one otherwise.

        Two passes can see the same change when a status write and a wake-up cross, and
        one event per change is what ``kubectl describe`` readers expect. A final reason
        counts as the same event whatever its message, since a job finishes once.
        """
        key = (uid, reason, "" if reason in _FINAL_REASONS else message)
        now = time.monotonic()
        with self._recent_lock:
            last = self._recent.get(key)
            if last is not None and now - last < REPEAT_WINDOW_SECONDS:
                return True
            self._recent[key] = now
            if len(self._recent) > RECENT_LIMIT:
                cutoff = now - REPEAT_WINDOW_SECONDS
                self._recent = {key: stamp for key, stamp in self._recent.items() if stamp >= cutoff}
        return False

    def post(self, body: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        """Create one event on the job; an API or connection failure is logged, not raised."""
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
        except (ApiException, HTTPError) as error:
            # An event is a courtesy; losing one must not fail the reconciliation.
            detail = f"{error.status} {error.reason}" if isinstance(error, ApiException) else f"{type(error).__name__}: {error}"
            logger.warning("could not post event %s: %s", reason, detail, extra={"job": f"{metadata['namespace']}/{metadata['name']}", "reason": reason})
