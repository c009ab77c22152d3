"""The shipped packages stay `mypy --strict` clean, as the style guide asks (like ruff, below).

The settings live in pyproject.toml ([tool.mypy]); this runs exactly what a developer runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(600)


def test_mypy_strict_clean() -> None:
    mypy = shutil.which("mypy")
    command = [mypy] if mypy else [sys.executable, "-m", "mypy"]
    result = subprocess.run(
        [*command, "--no-incremental"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
