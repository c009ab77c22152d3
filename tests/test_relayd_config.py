"""relayd's config file: every mistake is one line naming the file and the key, exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.sshd import require_binary

KEY = "11" * 32


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('listen = "127.0.0.1:0"\nbind = "eth0"\n', "unknown setting 'bind'"),
        ('listen = "127.0.0.1:0"\n[limits]\nmax_sesions = 3\n', "unknown limit 'max_sesions'"),
        ('listen = "127.0.0.1:0"\n[limits]\nmax_sessions = "many"\n', "limit max_sessions"),
        ('listen = "127.0.0.1:0"\nkeys = [\n', "config file"),
    ],
)
def test_bad_config_file_is_one_line_naming_file_and_key(
    tmp_path: Path, body: str, named: str
) -> None:
    key = tmp_path / "exit.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    config = tmp_path / "relayd.toml"
    config.write_text(body.replace("[limits]", f'keys = ["{key}"]\n[limits]', 1))
    result = subprocess.run(
        [require_binary("relayd"), "serve", "--config", str(config), "--control", "none"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert named in lines[0], lines[0]
    if named != "limit max_sessions":
        assert str(config) in lines[0], lines[0]
