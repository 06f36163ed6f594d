"""The one exception type that reconciliation steps raise for a problem the user must fix,
and the text of a Kubernetes API error for log lines."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from kubeclip.api.status import ConditionReason

#: Characters kept of an API server's message in a log line.
_API_MESSAGE_MAX_LENGTH = 300


class Problem(Exception):
    """Something in the job, its references or its cluster keeps the job from running.

    ``retry`` says whether the operator should look again later (a missing Secret may be
    created, a cluster may come back) or fail the job now (an invalid spec stays invalid
    until the user edits it, which starts a new reconciliation anyway).
    """

    def __init__(self, reason: ConditionReason, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry = retry


def describe_api_error(error: ApiException) -> str:
    """Describe an API error as its HTTP status, reason and the server's own message, for a log line.

    The message comes from the metav1.Status body. It names the object and the rule that
    failed, such as a status field that the schema rejects.
    """
    text = f"{error.status} {error.reason}"
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError, TypeError):
        message = None
    return f"{text}: {str(message)[:_API_MESSAGE_MAX_LENGTH]}" if message else text
