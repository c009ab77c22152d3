"""contrib/install.sh, the README's first command: where it puts things, for root and for a
normal user, in seconds.

A real `pipx install` builds a venv and downloads the dependencies (a minute, and the network),
so here `PIPX` names a stand-in that records how it was called and installs two small
wrappers in PIPX_BIN_DIR; what is checked is the script's own part: the locations (on every
shell's PATH for root; ~/.local/bin plus `pipx ensurepath` for a user), the man pages and the
completion it installs, and that a fresh shell with only the usual PATH finds `dupsession`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.prereq import missing

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60

FAKE_PIPX = """#!/bin/sh
# Records its arguments and the pipx locations, installs wrappers like pipx's own.
echo "$* PIPX_HOME=$PIPX_HOME PIPX_BIN_DIR=$PIPX_BIN_DIR" >>"$PIPX_LOG"
[ "$1" = install ] || exit 0
mkdir -p "$PIPX_HOME" "$PIPX_BIN_DIR"
for name in dupsession relayd; do
    printf '#!/bin/sh\\nPYTHONPATH=%s exec %s -m %s.cli "$@"\\n' "$REPO" "$PYTHON" "$name" \\
        >"$PIPX_BIN_DIR/$name"
    chmod 755 "$PIPX_BIN_DIR/$name"
done
"""


def copy_tree(tmp: Path) -> Path:
    """The files install.sh uses, in a tree any user can read."""
    tree = tmp / "repo"
    (tree / "contrib").mkdir(parents=True)
    shutil.copy(ROOT / "contrib" / "install.sh", tree / "contrib" / "install.sh")
    shutil.copytree(ROOT / "docs" / "man", tree / "docs" / "man")
    for path in [tmp, *tree.rglob("*"), tree]:
        path.chmod(0o755)
    return tree


def fake_pipx(tmp: Path) -> Path:
    path = tmp / "fake-pipx"
    path.write_text(FAKE_PIPX)
    path.chmod(0o755)
    return path


def run_install(tree: Path, env: dict[str, str], *args: str, user: str | None = None):
    argv = ["sh", str(tree / "contrib" / "install.sh"), *args]
    if user is not None:
        argv = ["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in env.items()], *argv]
        env = dict(os.environ)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT, env=env, stdin=subprocess.DEVNULL
    )


def test_root_installs_onto_every_shells_path(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        missing("the root layout needs root")
    tree = copy_tree(tmp_path)
    plan = run_install(tree, {**os.environ, "PIPX": str(fake_pipx(tmp_path))}, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "dupsession and relayd are in /usr/local/bin" in plan.stderr
    assert f"+ {tmp_path}/fake-pipx install --force {tree}" in plan.stderr
    assert "ensurepath" not in plan.stderr  # /usr/local/bin is on every PATH already
    assert "/usr/local/share/man/man1" in plan.stderr

    # And for real, into a temporary prefix.
    prefix = tmp_path / "prefix"
    env = {
        **os.environ,
        "PIPX": str(fake_pipx(tmp_path)),
        "PIPX_LOG": str(tmp_path / "pipx.log"),
        "PIPX_HOME": str(prefix / "pipx"),
        "PIPX_BIN_DIR": str(prefix / "bin"),
        "DUPSESSION_MAN_DIR": str(prefix / "man" / "man1"),
        "DUPSESSION_COMPLETION_DIR": str(prefix / "completions"),
        "REPO": str(ROOT),
        "PYTHON": sys.executable,
    }
    result = run_install(tree, env)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "pipx.log").read_text().splitlines()
    assert calls == [f"install --force {tree} PIPX_HOME={prefix}/pipx PIPX_BIN_DIR={prefix}/bin"]
    assert (prefix / "man" / "man1" / "dupsession.1").read_text() == (
        ROOT / "docs" / "man" / "dupsession.1"
    ).read_text()
    assert (prefix / "man" / "man1" / "relayd.1").exists()
    completion = (prefix / "completions" / "dupsession").read_text()
    assert "keygen" in completion and "--connect-timeout" in completion
    # A later shell, with nothing but a standard PATH plus the bin dir, finds both commands.
    for name in ("dupsession", "relayd"):
        fresh = subprocess.run(
            ["env", "-i", f"HOME={tmp_path}", f"PATH={prefix}/bin:/usr/bin:/bin", "sh", "-c",
             f"{name} --version"],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert fresh.returncode == 0 and fresh.stdout.startswith(name), fresh


def test_user_installs_into_local_bin_and_ensures_path() -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        missing("running as another user needs root and runuser")
    # Under /tmp itself: pytest's tmp_path sits in a 0700 directory the user cannot enter.
    with tempfile.TemporaryDirectory(prefix="dupsession-install-") as tmp:
        check_user_install(Path(tmp), pwd.getpwnam("nobody"))


def check_user_install(tmp_path: Path, user: pwd.struct_passwd) -> None:
    tree = copy_tree(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, user.pw_uid, user.pw_gid)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PIPX": str(fake_pipx(tmp_path))}
    plan = run_install(tree, env, "--dry-run", "--demo", user="nobody")
    assert plan.returncode == 0, plan.stderr
    assert f"dupsession and relayd are in {home}/.local/bin" in plan.stderr
    assert f"+ {tmp_path}/fake-pipx ensurepath" in plan.stderr
    # Its checkout is root's: installed from a copy (pip builds in the source tree).
    assert re.search(rf"\+ cp -R {tree} /tmp/\S+/dupsession\n", plan.stderr), plan.stderr
    assert f"{home}/.local/share/man/man1" in plan.stderr
    assert "not on this shell's PATH yet; new login shells have it" in plan.stderr
    assert plan.stderr.rstrip().endswith(f"+ {home}/.local/bin/dupsession demo")  # full path


def test_unknown_argument_is_refused(tmp_path: Path) -> None:
    result = run_install(copy_tree(tmp_path), dict(os.environ), "--frobnicate")
    assert result.returncode == 2 and "unknown argument --frobnicate" in result.stderr


@pytest.mark.parametrize("flag", ["--help"])
def test_help(flag: str, tmp_path: Path) -> None:
    result = run_install(copy_tree(tmp_path), dict(os.environ), flag)
    assert result.returncode == 0 and "pipx" in result.stdout
    assert result.stdout.rstrip().endswith("--dry-run prints the plan only.")  # comments only
