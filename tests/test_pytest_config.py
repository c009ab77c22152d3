"""The suite's own configuration: a failing property must be reported as a failure.

With warnings as errors, a DeprecationWarning raised while hypothesis printed its falsifying
example turned a property failure into a pytest INTERNALERROR, which hides the example.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FAILING_PROPERTY = """
from hypothesis import given, strategies as st

@given(st.integers(min_value=0, max_value=100))
def test_always_small(x: int) -> None:
    assert x < 10
"""


def test_failing_property_is_reported_with_its_example(tmp_path: Path) -> None:
    test_file = tmp_path / "test_property.py"
    test_file.write_text(FAILING_PROPERTY)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(REPO / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            str(test_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    out = done.stdout + done.stderr
    assert "INTERNALERROR" not in out, out[-3000:]
    assert done.returncode == 1, out[-3000:]
    assert "1 failed" in out
    assert "Falsifying example" in out
