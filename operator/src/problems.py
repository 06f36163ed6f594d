"""The one exception type that reconciliation steps raise for a problem the user must fix."""

from __future__ import annotations

from kubeclip.api.status import ConditionReason


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
