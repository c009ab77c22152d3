"""The README's first command: `dupsession demo` must run and show a real gain."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_shows_gain_and_asymmetric_winners() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dupsession.cli", "demo", "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    single = re.search(r"best single path \(lte-udp\)\s*│\s*(\d+)\s*│\s*([\d.]+)", out)
    multi = re.search(r"all three paths\s*│\s*(\d+)\s*│\s*([\d.]+)", out)
    assert single and multi, out
    assert int(single.group(1)) >= 50 and int(multi.group(1)) >= 50, out  # echoes came back
    # The floor is 15 ms out (wifi) + 12 ms back (lte) = 27 ms; the best single path is 47 ms.
    assert float(multi.group(2)) < 40.0 < float(single.group(2)), out
    wins = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"│\s*(wifi-udp|lte-udp|isp2-tcp)\s*│\s*(\d+)\s*│\s*(\d+)\s*│", out)
    }
    assert wins["wifi-udp"][0] > wins["lte-udp"][0], out  # fastest way out
    assert wins["lte-udp"][1] > wins["wifi-udp"][1], out  # fastest way back
