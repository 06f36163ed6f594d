"""Names, labels and the finalizer of the objects the operator creates for a ClipTrainingJob.

The operator finds what it created by these names and labels after a restart and in
remote clusters, so they depend only on the job's namespace, name and UID, never on
the time or on the operator's state.
"""

from __future__ import annotations

import hashlib
import re

#: Longest prefix of the job name kept in the workload name. With the dash and the hash
#: the name has 49 characters, which leaves room for the ``-progress`` suffix and the
#: 6 characters that the Job controller appends to pod names, within the 63 of a DNS label.
WORKLOAD_NAME_PREFIX_LENGTH = 40
#: Hex digits of the SHA-256 of NAMESPACE/NAME that make two jobs' workload names differ.
WORKLOAD_NAME_HASH_LENGTH = 8
#: Maximum length of a label value in Kubernetes.
LABEL_VALUE_MAX_LENGTH = 63

NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "app.kubernetes.io/instance"
JOB_NAMESPACE_LABEL = "kubeclip.dev/job-namespace"
JOB_NAME_LABEL = "kubeclip.dev/job-name"
JOB_UID_LABEL = "kubeclip.dev/job-uid"

#: Value of ``app.kubernetes.io/name`` on every object created for a job.
TRAINER_APP_NAME = "kubeclip-trainer"
#: Value of ``app.kubernetes.io/managed-by`` on every object created for a job.
OPERATOR_MANAGER_NAME = "kubeclip-operator"
#: Label selector of every object the operator created for any job, in any cluster.
TRAINER_SELECTOR = f"{NAME_LABEL}={TRAINER_APP_NAME},{MANAGED_BY_LABEL}={OPERATOR_MANAGER_NAME}"
#: Finalizer on a ClipTrainingJob whose objects live in a remote cluster, where no owner
#: reference can make the garbage collector delete them.
CLEANUP_FINALIZER = "kubeclip.dev/cleanup"

_DNS_LABEL_INVALID = re.compile(r"[^a-z0-9-]")
_LABEL_VALUE_INVALID = re.compile(r"[^A-Za-z0-9._-]")
_NOT_ALPHANUMERIC_EDGES = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")


def workload_name(namespace: str, name: str) -> str:
    """Return the name shared by every object created for the job ``namespace/name``.

    The job name is cut to 40 characters and followed by a dash and 8 hex digits of the
    SHA-256 of ``NAMESPACE/NAME``. So jobs with a long common prefix get different names,
    and so do jobs of the same name in two namespaces, which can share one BringYourOwn
    target namespace.
    Characters that a DNS label does not allow, such as the dots of a DNS subdomain
    name, become dashes.

    Raises:
        ValueError: ``namespace`` or ``name`` is empty.
    """
    if not namespace or not name:
        raise ValueError(f"a workload name needs the job's namespace and name, got namespace {namespace!r} and name {name!r}")
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:WORKLOAD_NAME_HASH_LENGTH]
    prefix = _DNS_LABEL_INVALID.sub("-", name.lower()[:WORKLOAD_NAME_PREFIX_LENGTH])
    # The digest ends the name with a letter or digit; the prefix must start with one.
    prefix = prefix.lstrip("-") or "job"
    return f"{prefix}-{digest}"


def config_configmap_name(workload: str) -> str:
    """Return the name of the ConfigMap that contains the trainer config."""
    return f"{workload}-config"


def progress_configmap_name(workload: str) -> str:
    """Return the name of the ConfigMap the trainer writes its progress to."""
    return f"{workload}-progress"


def dataset_secret_copy_name(workload: str) -> str:
    """Return the name of the copy of the dataset's credentials Secret in a BringYourOwn cluster."""
    return f"{workload}-dataset"


def output_secret_copy_name(workload: str) -> str:
    """Return the name of the copy of the output's credentials Secret in a BringYourOwn cluster."""
    return f"{workload}-output"


def workload_labels(job_namespace: str, job_name: str, job_uid: str, workload: str) -> dict[str, str]:
    """Return the labels of every object created for a job.

    Values longer than 63 characters are cut, and characters a label value does not allow
    become dashes, so a job name of up to 253 characters still gives valid labels.
    """
    return {
        NAME_LABEL: TRAINER_APP_NAME,
        MANAGED_BY_LABEL: OPERATOR_MANAGER_NAME,
        INSTANCE_LABEL: label_value(workload),
        JOB_NAMESPACE_LABEL: label_value(job_namespace),
        JOB_NAME_LABEL: label_value(job_name),
        JOB_UID_LABEL: label_value(job_uid),
    }


def label_value(text: str) -> str:
    """Turn ``text`` into a valid label value: at most 63 characters of ``[A-Za-z0-9._-]``,
    starting and ending with a letter or digit (or empty)."""
    value = _LABEL_VALUE_INVALID.sub("-", text)[:LABEL_VALUE_MAX_LENGTH]
    return _NOT_ALPHANUMERIC_EDGES.sub("", value)
