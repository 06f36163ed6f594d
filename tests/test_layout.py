"""The repository layout must not break Python started from the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_stdlib_operator_not_shadowed_from_repo_root():
    # `python -I -c` would hide the problem; plain `-c` puts the working folder first on sys.path.
    result = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__); print(operator.eq(1, 1))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert not result.stdout.splitlines()[0].startswith(str(REPO))
    assert result.stdout.splitlines()[1] == "True"


def test_operator_package_importable_as_kubeclip_operator():
    import kubeclip.operator

    assert Path(kubeclip.operator.__file__).parent == REPO / "operator" / "src"
