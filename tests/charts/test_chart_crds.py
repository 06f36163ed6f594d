"""The chart's CRDs are the generated ones, and the regenerate command writes both copies."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from kubeclip.api.crd import REGENERATE_COMMAND, RESOURCE_DEFINITIONS, main, render_crd_file
from tests.support.operator_access import CHART_DIR, REPO

CRDS_DIR = REPO / "crds"
CHART_CRDS_DIR = CHART_DIR / "crds"


def test_chart_crds_equal_crds_folder() -> None:
    assert sorted(path.name for path in CHART_CRDS_DIR.iterdir()) == sorted(path.name for path in CRDS_DIR.iterdir())
    for path in CRDS_DIR.iterdir():
        copy = CHART_CRDS_DIR / path.name
        assert copy.read_bytes() == path.read_bytes(), f"{copy} differs from {path}; run `{REGENERATE_COMMAND}`"


def test_regenerate_command_names_both_folders() -> None:
    arguments = shlex.split(REGENERATE_COMMAND)
    outputs = [arguments[index + 1] for index, argument in enumerate(arguments) if argument == "--output"]
    assert outputs == ["crds/", "charts/kubeclip/crds/"]


def test_repeated_output_writes_every_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders = [tmp_path / "crds", tmp_path / "chart" / "crds"]
    assert main(["--output", str(folders[0]), "--output", str(folders[1])]) == 0
    printed = capsys.readouterr().out.splitlines()
    for folder in folders:
        for definition in RESOURCE_DEFINITIONS:
            written = folder / definition.file_name
            assert written.read_text(encoding="utf-8") == render_crd_file(definition)
            assert str(written) in printed
