"""The permissions the operator needs, written out independently of the chart's RBAC.

The chart tests compare the chart's ClusterRole and Role with these tables, and ask the
API server (SelfSubjectAccessReview) whether the chart's identities hold each of them
and nothing listed in the denied tables.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every verb on an object the operator owns outright.
MANAGE = ("get", "list", "watch", "create", "update", "patch", "delete")
READ = ("get", "list", "watch")


@dataclass(frozen=True, order=True)
class Permission:
    """One verb on one resource (``RESOURCE/SUBRESOURCE`` for a subresource) of an API group; "" is the core group."""

    group: str
    resource: str
    verb: str

    @property
    def base_resource(self) -> str:
        return self.resource.partition("/")[0]

    @property
    def subresource(self) -> str:
        return self.resource.partition("/")[2]

    def __str__(self) -> str:
        group = self.group or "core"
        return f"{self.verb} {self.resource}.{group}"


def expand(grants: list[tuple[str, str, tuple[str, ...]]]) -> frozenset[Permission]:
    """Turn (group, resource, verbs) rows into one Permission per verb."""
    return frozenset(Permission(group, resource, verb) for group, resource, verbs in grants for verb in verbs)


#: What the operator does in its home cluster, in every namespace (the ClusterRole).
OPERATOR_PERMISSIONS = expand([
    ("kubeclip.dev", "cliptrainingjobs", ("get", "list", "watch", "patch", "update")),
    ("kubeclip.dev", "cliptrainingjobs/status", ("get", "patch", "update")),
    ("kubeclip.dev", "cliptrainingjobs/finalizers", ("update",)),
    ("kubeclip.dev", "clipdatasets", READ),
    ("kubeclip.dev", "clipclusters", READ),
    ("kubeclip.dev", "clipclusters/status", ("get", "patch", "update")),
    ("", "secrets", ("get",)),
    ("", "configmaps", MANAGE),
    ("", "serviceaccounts", MANAGE),
    ("", "pods", READ),
    ("", "events", ("create", "patch")),
    ("", "namespaces", READ),
    ("events.k8s.io", "events", ("create", "patch")),
    ("rbac.authorization.k8s.io", "roles", MANAGE),
    ("rbac.authorization.k8s.io", "rolebindings", MANAGE),
    ("batch", "jobs", MANAGE),
    ("apiextensions.k8s.io", "customresourcedefinitions", READ),
])  # fmt: skip

#: Requests the operator must not be allowed in its home cluster.
OPERATOR_DENIED = expand([
    ("", "secrets", ("list", "watch", "create", "update", "patch", "delete")),
    ("", "pods", ("create", "delete")),
    ("", "pods/exec", ("create",)),
    ("", "serviceaccounts/token", ("create",)),
    ("", "nodes", ("list",)),
    ("", "namespaces", ("create", "delete")),
    ("rbac.authorization.k8s.io", "clusterroles", ("create",)),
    ("rbac.authorization.k8s.io", "clusterrolebindings", ("create",)),
    ("kubeclip.dev", "cliptrainingjobs", ("create", "delete")),
    ("kubeclip.dev", "clipclusters", ("create", "update", "delete")),
    ("kubeclip.dev", "clipdatasets", ("update", "delete")),
    ("apps", "deployments", ("create",)),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("create", "delete")),
])  # fmt: skip

#: What the operator does in the target namespace of a BringYourOwn cluster (the Role).
REMOTE_TARGET_PERMISSIONS = expand([
    ("", "configmaps", MANAGE),
    ("", "serviceaccounts", MANAGE),
    ("", "secrets", MANAGE),
    ("rbac.authorization.k8s.io", "roles", MANAGE),
    ("rbac.authorization.k8s.io", "rolebindings", MANAGE),
    ("batch", "jobs", MANAGE),
    ("", "pods", READ),
    ("", "events", READ),
])  # fmt: skip

#: Requests the remote identity must not be allowed, even in its own namespace.
REMOTE_TARGET_DENIED_IN_NAMESPACE = expand([
    ("", "pods", ("create", "delete")),
    ("", "pods/exec", ("create",)),
    ("", "serviceaccounts/token", ("create",)),
    ("apps", "deployments", ("create",)),
    ("kubeclip.dev", "cliptrainingjobs", ("get",)),
])  # fmt: skip

#: Cluster-scoped requests the remote identity must not be allowed.
REMOTE_TARGET_DENIED_CLUSTER_WIDE = expand([
    ("", "nodes", ("list",)),
    ("", "namespaces", ("list", "create")),
    ("rbac.authorization.k8s.io", "clusterroles", ("create",)),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list",)),
])  # fmt: skip


def rule_permissions(rules: list[dict]) -> frozenset[Permission]:
    """Flatten RBAC PolicyRules into Permissions; wildcards stay as the literal "*"."""
    return frozenset(
        Permission(group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    )
