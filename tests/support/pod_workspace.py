"""The pod workspace moved into the package as ``kubeclip.dev.pod_workspace``; re-exported for the tests that import it here."""

from kubeclip.dev.pod_workspace import (  # noqa: F401 - re-exports
    DEFAULT_FILE_MODE,
    SERVICE_ACCOUNT_DIR_ENV,
    TOKEN_EXPIRATION_SECONDS,
    ApiServer,
    LocalContainer,
    PodSetupError,
    expand_references,
    map_mounts,
    materialize_volume,
    pod_field,
    prepare_container,
    resolve_container_env,
    rewrite_path,
    write_service_account_folder,
)
