"""The command line as a user meets it: version, help, commands vs host names, keys, config
errors, Ctrl-C and closed pipes. Real `dupsession`/`relayd` processes, a private HOME."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dupsession import cli
from relayd import cli as relayd_cli

TIMEOUT = 30


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh HOME with no config dir at all (what a new user has)."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "DUPSESSION_"))}
    env.update(HOME=str(home), COLUMNS="100", **extra)
    return env


def dupsession(
    home: Path, *argv: str, stdin: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dupsession.cli", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        env=env_for(home, **extra),
    )


def write_config(home: Path, text: str) -> Path:
    path = home / ".config" / "dupsession" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- version and help ---------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["dupsession.cli", "relayd.cli"])
def test_version(module: str, home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env_for(home),
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"(dupsession|relayd) \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


@pytest.mark.parametrize(
    "parser",
    [cli.build_parser(), cli._proxy_parser(), relayd_cli.build_parser()],
    ids=["dupsession", "proxy-mode", "relayd"],
)
def test_every_option_has_help(parser: argparse.ArgumentParser) -> None:
    for each in _parsers(parser):
        for action in each._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (each.prog, action.dest)
        # The help renders (every %-placeholder is valid) and never shows a doubled %.
        assert "%%" not in each.format_help(), each.prog


@pytest.mark.parametrize("argv", [["--help"], ["probe", "--help"], ["keygen", "--help"]])
def test_help_shows_examples_and_no_doubled_percent(argv: list[str], home: Path) -> None:
    result = dupsession(home, *argv)
    assert result.returncode == 0, result.stderr
    assert "%%" not in result.stdout
    assert "example" in result.stdout
    if argv == ["--help"]:
        assert "ProxyCommand dupsession -- %h %p" in result.stdout


def test_no_arguments_is_usage_error(home: Path) -> None:
    result = dupsession(home)
    assert result.returncode == 2
    assert "give HOST PORT, or a COMMAND" in result.stderr


# -- commands never swallow host names ----------------------------------------------------------


@pytest.mark.parametrize("host", ["status", "demo", "probe", "keygen", "init", "config"])
def test_host_named_like_a_command_after_double_dash(host: str, home: Path) -> None:
    """After `--`, `status` is a host: proxy mode runs (and reports that no path is set up)."""
    result = dupsession(home, "--connect-timeout", "1", "--", host, "22")
    assert result.returncode == 2, result.stderr
    assert "no paths configured" in result.stderr, result.stderr
    assert "usage" not in result.stderr


# -- keygen -------------------------------------------------------------------------------------


def test_keygen_makes_missing_directories(home: Path) -> None:
    result = dupsession(home, "keygen")
    assert result.returncode == 0, result.stderr
    key = home / ".config" / "dupsession" / "key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.parent.stat().st_mode & 0o777 == 0o700
    assert re.fullmatch(r"[0-9a-f]{64}\n", key.read_text())
    again = dupsession(home, "keygen")
    assert again.returncode == 2 and "already exists" in again.stderr
    deep = home / "a" / "b" / "key"
    assert dupsession(home, "keygen", str(deep)).returncode == 0
    assert deep.stat().st_mode & 0o777 == 0o600


def test_keygen_dash_prints_the_key(home: Path) -> None:
    first, second = dupsession(home, "keygen", "-"), dupsession(home, "keygen", "-")
    assert first.returncode == 0 and second.returncode == 0
    assert re.fullmatch(r"[0-9a-f]{64}\n", first.stdout)
    assert first.stdout != second.stdout
    assert not (home / "-").exists() and not Path("-").exists()


# -- config errors name the file and the key ----------------------------------------------------

EXIT = '[exits.home]\naddress = "198.18.0.1:7300"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'exit = "home"\n'
            + EXIT
            + '[relays.x]\nurl = "udp://198.18.1.1:7400"\nbind = "wlan0"\n',
            r"\[relays\.x\]: unknown key bind \(known here: exit, exit_address, tier, url\)",
        ),
        ('exit = "home"\n' + EXIT + "port = 7300\n", r"\[exits\.home\]: unknown key port"),
        ('exit = "home"\nuplink = ["wlan0"]\n' + EXIT, r"config\.toml: unknown key uplink"),
        ('exit = "home"\n' + EXIT + '[hosts.a]\nexitt = "home"\n', r"\[hosts\.a\]: unknown key"),
        (EXIT, r'no exit chosen: add exit = "home" at the top'),
        ('exit = "lab"\n' + EXIT, r"exit 'lab' is not defined under \[exits\]"),
    ],
    ids=["bind-in-relay", "exit-key", "top-key", "host-key", "no-exit", "undefined-exit"],
)
def test_config_errors(text: str, expected: str, home: Path) -> None:
    config = write_config(home, text)
    result = dupsession(home, "--", "myserver", "22")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"dupsession: {config}"), result.stderr
    assert re.search(expected, result.stderr), result.stderr


def test_exit_flag_picks_the_exit(home: Path) -> None:
    write_config(home, EXIT)
    result = dupsession(home, "--exit", "nope", "--", "myserver", "22")
    assert result.returncode == 2
    assert "exit 'nope' is not defined" in result.stderr


# -- Ctrl-C and closed pipes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["demo", "--seconds", "20"], ["--path", "udp://SILENT", "--key", "KEY", "--", "h", "22"]],
    ids=["demo", "proxy-connecting"],
)
def test_ctrl_c_is_quiet_130(argv: list[str], home: Path) -> None:
    key = home / "key"
    assert dupsession(home, "keygen", str(key)).returncode == 0
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes HELLOs, never answers
    silent.bind(("127.0.0.1", 0))
    where = f"127.0.0.1:{silent.getsockname()[1]}"
    argv = [a.replace("KEY", str(key)).replace("SILENT", where) for a in argv]
    run_dir = home / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "dupsession.cli", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(home, DUPSESSION_RUNTIME_DIR=str(run_dir)),
    )
    # Ctrl-C once it runs (its control socket exists), not while Python is still importing.
    deadline = time.monotonic() + TIMEOUT
    while not list(run_dir.glob("*.sock")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=TIMEOUT)
    silent.close()
    assert process.returncode == 130, err
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err


@pytest.mark.parametrize(
    "argv",
    [["dupsession.cli", "--print-completion", "bash"], ["relayd.cli", "status", "--json"]],
    ids=["dupsession", "relayd"],
)
def test_closed_pipe_is_quiet(argv: list[str], home: Path) -> None:
    """`dupsession --print-completion bash | head -0`: no traceback, the SIGPIPE status."""
    process = subprocess.Popen(
        [sys.executable, "-m", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(home, DUPSESSION_RUNTIME_DIR=str(home / "run")),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first write
    err = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=TIMEOUT) == 128 + signal.SIGPIPE
    assert err == b""


def test_completion_is_generated_from_the_parser(home: Path) -> None:
    result = dupsession(home, "--print-completion", "bash")
    assert result.returncode == 0, result.stderr
    for word in ("keygen", "status", "probe", "--connect-timeout", "--path"):
        assert word in result.stdout


# -- logging ------------------------------------------------------------------------------------


def test_bad_log_variable_is_named_not_fatal(home: Path) -> None:
    result = dupsession(home, "--", "h", "22", DUPSESSION_LOG="loud")
    assert "ignoring DUPSESSION_LOG='loud'" in result.stderr
    assert result.returncode == 2  # still the real error (no paths), not a crash


# -- init and config ----------------------------------------------------------------------------


def test_init_writes_a_config_that_loads_and_refuses_to_overwrite(home: Path) -> None:
    first = dupsession(home, "init", "198.18.0.1", "--uplink", "wlan0", "--uplink", "usb0")
    assert first.returncode == 0, first.stderr
    config = home / ".config" / "dupsession" / "config.toml"
    key = home / ".config" / "dupsession" / "key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (
        "relayd serve --listen 0.0.0.0:7300 --key /etc/dupsession/key --allow localhost:22\n"
        in (first.stdout)
    )
    assert "    ProxyCommand dupsession -- %h %p\n" in first.stdout
    described = dupsession(home, "config", "localhost")
    assert described.returncode == 0, described.stderr
    lines = described.stdout.splitlines()
    assert f"config {config}" in lines and "exit home" in lines and "target localhost:22" in lines
    assert f"key {key} (mode 0600)" in lines and "policy auto" in lines
    paths = [line for line in lines if line.startswith("path ")]
    assert paths == [
        f"path {u}/direct/{t} {t}://198.18.0.1:7300?bind={u}"
        for u in ("wlan0", "usb0")
        for t in ("udp", "tcp")
    ]
    key_text = key.read_text()
    again = dupsession(home, "init", "198.18.0.2")
    assert again.returncode == 2 and "exists" in again.stderr and "--force" in again.stderr
    forced = dupsession(home, "init", "198.18.0.2:7400", "--force", "--target", "localhost:2222")
    assert forced.returncode == 0, forced.stderr
    assert "Kept the key" in forced.stdout and key.read_text() == key_text
    assert "--allow localhost:2222" in forced.stdout and "    Port 2222\n" in forced.stdout
    assert "udp://198.18.0.2:7400" in dupsession(home, "config", "localhost").stdout


def test_config_without_a_config_file_points_at_init(home: Path) -> None:
    result = dupsession(home, "config", "myserver")
    assert result.returncode == 2
    assert "run: dupsession init EXIT_HOST" in result.stderr


def test_uplink_choice() -> None:
    from dupsession.firstrun import Uplink, choose_uplinks, server_alive_count

    wlan, usb = Uplink("wlan0", ("198.18.5.2",)), Uplink("usb0", ("198.18.6.2",))
    assert choose_uplinks([wlan], as_root=True)[0] == []  # one way out: no binding needed
    assert choose_uplinks([wlan, usb], as_root=True)[0] == ["wlan0", "usb0"]
    assert choose_uplinks([wlan, usb], as_root=False)[0] == ["198.18.5.2", "198.18.6.2"]
    assert server_alive_count(600) * 30 > 600


def test_find_uplinks_sees_the_default_route_interface() -> None:
    import json
    import shutil

    from dupsession.firstrun import _NOT_UPLINKS, find_uplinks
    from tests.prereq import missing

    ip = shutil.which("ip") or "/usr/sbin/ip"
    if not os.path.exists(ip):
        missing("needs iproute2 (`ip`)")

    def ip_json(*args: str) -> list[dict[str, object]]:
        result = subprocess.run([ip, "-j", *args], capture_output=True, text=True, check=True)
        return json.loads(result.stdout or "[]")  # type: ignore[no-any-return]

    routed = {r.get("dev") for r in ip_json("route", "show", "table", "all", "default")}
    addressed = {
        link["ifname"]
        for link in ip_json("addr", "show", "up")
        if any(a.get("scope") == "global" for a in link.get("addr_info", []))  # type: ignore[attr-defined]
    }
    found = {u.name for u in find_uplinks()}
    assert found <= routed | {
        r.get("dev") for r in ip_json("-6", "route", "show", "table", "all", "default")
    }
    assert found >= {d for d in routed & addressed if not str(d).startswith(_NOT_UPLINKS)}


def test_readme_shows_what_init_prints(home: Path) -> None:
    """The README's `dupsession init` transcript is the real output (HOME aside)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    command = "$ dupsession init 198.18.0.1 --host myserver\n"
    shown = readme.split(command, 1)[1].split("```", 1)[0]
    result = dupsession(home, "init", "198.18.0.1", "--host", "myserver")
    assert result.returncode == 0, result.stderr
    assert result.stdout.replace(str(home), "/home/you") == shown
