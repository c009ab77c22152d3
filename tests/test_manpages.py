"""Man pages are generated from the parsers (argparse-manpage) and kept in step with them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dupsession import cli

ROOT = Path(__file__).resolve().parent.parent


def test_committed_man_pages_match_the_parsers() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "contrib" / "gen-manpages.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr


def test_man_page_covers_every_command_and_the_proxy_form() -> None:
    page = (ROOT / "docs" / "man" / "dupsession.1").read_text()
    for name in cli.COMMANDS:
        assert f"dupsession {name}" in page, name
    assert "ProxyCommand dupsession \\-\\- %h %p" in page  # roff escapes each -
    assert "%%" not in page
    relayd = (ROOT / "docs" / "man" / "relayd.1").read_text()
    assert "relayd serve" in relayd and "\\-\\-allow" in relayd
