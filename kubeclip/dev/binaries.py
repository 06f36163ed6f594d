"""Build the control-plane binaries from their Go modules and cache them.

``kubeclip.dev.cluster`` calls ``ensure_binaries`` before it starts a cluster, and
``scripts/install-control-plane.sh`` runs ``python -m kubeclip.dev.binaries`` to build
everything ahead of the tests. Each binary lives in its own folder,
``<cache>/bin/<component>-<version>/<component>``, so a cached binary is never rebuilt
and a version change builds into a new folder.

The Kubernetes binaries and etcd come from one generated wrapper module, because the
go.mod of k8s.io/kubernetes requires its staging modules at the placeholder version
v0.0.0 and the go command ignores the replace lines of a dependency. The wrapper repeats
those replace lines with the real staging tag, and one ``go build`` compiles every
missing binary of the group, so the packages they share are compiled once. kwok and
helm have no replace lines and are built with ``go install PACKAGE@VERSION``.
Builds run one after another with ``go build -p 2``, because the compile of
kube-apiserver alone keeps two cores busy.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubeclip.dev import versions

logger = logging.getLogger(__name__)

#: Build jobs passed to ``go build -p``. Override with KUBECLIP_GO_BUILD_JOBS on a larger machine.
DEFAULT_GO_BUILD_JOBS = 2
#: Module path of the generated wrapper module. It is never published.
WRAPPER_MODULE = "kubeclip.dev/k8sbuild"
#: Go language version of the wrapper: the ``go`` line of k8s.io/kubernetes v1.36.
WRAPPER_GO_VERSION = "1.26.0"
#: Fixed build date stamped into the Kubernetes binaries, so two builds of one version are identical.
BUILD_DATE = "1970-01-01T00:00:00Z"


class BuildError(RuntimeError):
    """A Go build failed, or Go is missing."""


@dataclass(frozen=True)
class Component:
    """One binary: its file name, release and the import path of its main package."""

    name: str
    version: str
    package: str
    #: True for binaries built in the Kubernetes wrapper module.
    in_wrapper: bool


COMPONENTS: dict[str, Component] = {
    component.name: component
    for component in (
        Component("kube-apiserver", versions.KUBERNETES_VERSION, "k8s.io/kubernetes/cmd/kube-apiserver", True),
        Component("kube-controller-manager", versions.KUBERNETES_VERSION, "k8s.io/kubernetes/cmd/kube-controller-manager", True),
        Component("kube-scheduler", versions.KUBERNETES_VERSION, "k8s.io/kubernetes/cmd/kube-scheduler", True),
        Component("kubectl", versions.KUBERNETES_VERSION, "k8s.io/kubernetes/cmd/kubectl", True),
        Component("etcd", versions.ETCD_VERSION, "go.etcd.io/etcd/server/v3", True),
        Component("kwok", versions.KWOK_VERSION, "sigs.k8s.io/kwok/cmd/kwok", False),
        Component("helm", versions.HELM_VERSION, "helm.sh/helm/v3/cmd/helm", False),
    )
}

#: Binaries that ``kubeclip dev cluster up`` starts.
CONTROL_PLANE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def cache_root() -> Path:
    """Return the kubeclip cache folder: $KUBECLIP_CACHE_DIR, else ~/.cache/kubeclip."""
    configured = os.environ.get("KUBECLIP_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "kubeclip"


def binary_path(name: str) -> Path:
    """Return where the cached binary of component ``name`` lives, built or not."""
    component = _component(name)
    return cache_root() / "bin" / f"{component.name}-{component.version}" / component.name


def missing_binaries(names: tuple[str, ...] | list[str]) -> list[str]:
    """Return the components among ``names`` whose cached binary does not exist yet."""
    return [name for name in names if not binary_path(name).is_file()]


def render_wrapper_go_mod() -> str:
    """Return the go.mod of the wrapper module that pins k8s.io/kubernetes and every staging module."""
    replaces = "".join(
        f"\tk8s.io/{module} => k8s.io/{module} {versions.STAGING_VERSION}\n" for module in versions.STAGING_MODULES
    )
    return (
        f"module {WRAPPER_MODULE}\n\n"
        f"go {WRAPPER_GO_VERSION}\n\n"
        f"godebug default=go{WRAPPER_GO_VERSION.rsplit('.', 1)[0]}\n\n"
        "require (\n"
        f"\tk8s.io/kubernetes {versions.KUBERNETES_VERSION}\n"
        f"\tgo.etcd.io/etcd/server/v3 {versions.ETCD_VERSION}\n"
        ")\n\n"
        f"replace (\n{replaces})\n"
    )


def render_tools_go(packages: list[str]) -> str:
    """Return a tools.go that imports the main packages, so ``go mod tidy`` keeps their requirements."""
    imports = "".join(f'\t_ "{package}"\n' for package in sorted(packages))
    return f"//go:build tools\n\n// Package tools pins the main packages that this module builds.\npackage tools\n\nimport (\n{imports})\n"


def kubernetes_ldflags(version: str) -> str:
    """Return the linker flags that strip symbols and stamp ``version`` the way Kubernetes' own build does.

    Without the stamp, /version reports v0.0.0-master and clients that check the server
    version (helm, kubectl's skew warning, kwok) misbehave.
    """
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean", "buildDate": BUILD_DATE}
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{key}={value}" for key, value in stamps.items()]
    return " ".join(flags)


def helm_ldflags(version: str, kubernetes_version: str) -> str:
    """Return helm's linker flags: its own version and the Kubernetes minor its offline rendering assumes."""
    major, minor = kubernetes_version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags += [f"-X {package}.k8sVersionMajor={major}", f"-X {package}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def ensure_binaries(names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Build every component among ``names`` that is not cached yet.

    Returns:
        Wall-clock seconds per build step that ran: "kubernetes" for the wrapper group,
        else the component name. Empty when everything was cached.

    Raises:
        BuildError: Go is missing or a build failed.
    """
    missing = missing_binaries(names)
    timings: dict[str, float] = {}
    wrapper_group = [name for name in missing if COMPONENTS[name].in_wrapper]
    if wrapper_group:
        timings["kubernetes"] = _timed(lambda: build_wrapper_group(wrapper_group))
    for name in missing:
        if not COMPONENTS[name].in_wrapper:
            timings[name] = _timed(lambda name=name: build_module_component(name))
    return timings


def build_wrapper_group(names: list[str]) -> None:
    """Build the given Kubernetes and etcd binaries with one ``go build`` in a generated wrapper module."""
    components = [_component(name) for name in names]
    module_dir = cache_root() / "build" / f"kubernetes-{versions.KUBERNETES_VERSION}"
    module_dir.mkdir(parents=True, exist_ok=True)
    (module_dir / "go.mod").write_text(render_wrapper_go_mod())
    # tools.go imports every wrapper package, not only the missing ones, so the module
    # graph (and thus each binary's dependency versions) is the same whatever is rebuilt.
    all_packages = [component.package for component in COMPONENTS.values() if component.in_wrapper]
    (module_dir / "tools.go").write_text(render_tools_go(all_packages))

    # tidy resolves the third-party requirements and writes go.sum; it needs the module proxy.
    logger.info("resolving the modules of k8s.io/kubernetes %s in %s", versions.KUBERNETES_VERSION, module_dir)
    _run_go(["mod", "tidy"], module_dir, module_dir / "tidy.log")

    with tempfile.TemporaryDirectory(dir=module_dir) as output_dir:
        logger.info("building %s (first build: tens of minutes on 2 cores)", ", ".join(names))
        arguments = ["build", "-p", str(_go_build_jobs()), "-trimpath", "-ldflags", kubernetes_ldflags(versions.KUBERNETES_VERSION)]
        _run_go([*arguments, "-o", output_dir + os.sep, *[component.package for component in components]], module_dir, module_dir / "build.log")
        for component in components:
            _install(Path(output_dir) / _default_exec_name(component.package), component.name)


def build_module_component(name: str) -> None:
    """Build one component that has no replace lines with ``go install PACKAGE@VERSION``."""
    component = _component(name)
    work_dir = cache_root() / "build" / f"{component.name}-{component.version}"
    work_dir.mkdir(parents=True, exist_ok=True)
    ldflags = helm_ldflags(component.version, versions.KUBERNETES_VERSION) if name == "helm" else "-s -w"
    with tempfile.TemporaryDirectory(dir=work_dir) as output_dir:
        logger.info("building %s %s", component.name, component.version)
        arguments = ["install", "-p", str(_go_build_jobs()), "-trimpath", "-ldflags", ldflags, f"{component.package}@{component.version}"]
        _run_go(arguments, work_dir, work_dir / "build.log", {"GOBIN": output_dir})
        _install(Path(output_dir) / _default_exec_name(component.package), component.name)


def _install(built: Path, name: str) -> None:
    # os.replace within one file system is atomic, so a reader never sees half a binary.
    target = binary_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, target)
    logger.info("installed %s", target)


def _run_go(arguments: list[str], cwd: Path, log_path: Path, extra_environment: dict[str, str] | None = None) -> None:
    go = shutil.which("go")
    if go is None:
        raise BuildError("go is not on PATH; install Go 1.26 or newer (k8s.io/kubernetes v1.36 needs it) and run again")
    environment = {**os.environ, **_go_environment(), **(extra_environment or {})}
    with open(log_path, "wb") as log:
        result = subprocess.run([go, *arguments], cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise BuildError(f"`go {' '.join(arguments[:1])}` failed with exit code {result.returncode} in {cwd}; full log in {log_path}:\n{tail}")


def _go_environment() -> dict[str, str]:
    # GOTOOLCHAIN=local fails fast instead of downloading another Go when a go line is too new.
    return {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}


def _go_build_jobs() -> int:
    configured = os.environ.get("KUBECLIP_GO_BUILD_JOBS")
    if configured is None:
        return DEFAULT_GO_BUILD_JOBS
    if not configured.isdigit() or int(configured) < 1:
        raise BuildError(f"KUBECLIP_GO_BUILD_JOBS={configured!r} is invalid; set a positive integer or unset it")
    return int(configured)


def _default_exec_name(package: str) -> str:
    # The go command names a binary after the last path element, skipping a major version suffix (/v3).
    parts = package.split("/")
    last = parts[-1]
    if last.startswith("v") and last[1:].isdigit() and len(parts) > 1:
        return parts[-2]
    return last


def _component(name: str) -> Component:
    if name not in COMPONENTS:
        raise KeyError(f"unknown component {name!r}; known components: {', '.join(COMPONENTS)}")
    return COMPONENTS[name]


def _timed(step: Callable[[], None]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    """Build the named components (default: all), print each build's wall-clock time and return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = (argv if argv is not None else sys.argv[1:]) or list(COMPONENTS)
    try:
        timings = ensure_binaries(names)
    except (BuildError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for step, seconds in timings.items():
        print(f"built {step} in {seconds:.0f} s")
    for name in names:
        print(f"{name} {COMPONENTS[name].version}: {binary_path(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
