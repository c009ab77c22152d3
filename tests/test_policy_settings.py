"""--policy/--best-k, `policy`/`best_k` in config.toml (globally and per host), path tiers from
URLs, uplinks and relays, and what the client then asks the exit for."""

from __future__ import annotations

from pathlib import Path

import pytest

from dupsession import settings
from dupsession.core.policy import Policy, Schedule, Tier
from dupsession.pathspec import PathSpecError, parse_path

CONFIG = """
policy = "stripe"
best_k = 3
exit = "home"
uplinks = ["wlan0", {bind = "usb0", tier = "backup"}]

[exits.home]
address = "198.18.0.1:7300"
transports = ["udp"]

[relays.vps]
url = "udp://198.18.0.9:7301"
tier = "overflow"

[hosts.box]
policy = "best-k"
"""


def load(tmp_path: Path, text: str, host: str | None = None) -> settings.ClientSettings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return settings.load(path, host)


def test_path_url_tier() -> None:
    spec = parse_path("udp://198.18.0.1:7300?tier=backup")
    assert spec.tier is Tier.BACKUP
    assert str(spec) == "udp://198.18.0.1:7300?tier=backup"
    assert parse_path("tcp://198.18.0.1:7300").tier is Tier.PRIMARY
    with pytest.raises(PathSpecError, match="tier must be primary, overflow, backup, not 'cheap'"):
        parse_path("udp://198.18.0.1:7300?tier=cheap")


def test_config_policy_tiers_and_host_override(tmp_path: Path) -> None:
    loaded = load(tmp_path, CONFIG)
    assert (loaded.policy, loaded.best_k) == (Policy.STRIPE, 3)
    tiers = [(p.uplink, p.via, p.tier) for p in loaded.paths]
    assert tiers == [
        ("wlan0", "direct", Tier.PRIMARY),
        ("wlan0", "vps", Tier.OVERFLOW),
        ("usb0", "direct", Tier.BACKUP),
        ("usb0", "vps", Tier.BACKUP),  # the stricter of uplink and relay
    ]
    # paths are numbered from 1 in the HELLO, as the client opens them
    assert loaded.schedule() == Schedule(
        Policy.STRIPE, 3, ((2, Tier.OVERFLOW), (3, Tier.BACKUP), (4, Tier.BACKUP))
    )
    assert load(tmp_path, CONFIG, "box").policy is Policy.BEST_K


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('policy = "fast"\n', "policy must be one of redundant, best-k, stripe, auto, not 'fast'"),
        ("best_k = 0\n", "best_k must be a whole number from 1 to 255"),
        ('best_k = "2"\n', "best_k must be a whole number"),
        ('uplinks = [{bind = "usb0", tier = "spare"}]\n', "tier must be primary"),
        ('uplinks = [{name = "usb0"}]\n', "unknown key"),
        ('[hosts.x]\npolicy = "x"\n', "policy must be one of"),
    ],
)
def test_bad_policy_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(settings.SettingsError, match=message):
        load(tmp_path, text, "x")


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    loaded = load(tmp_path, CONFIG)
    flagged = settings.with_overrides(loaded, None, [], policy="auto", best_k=1)
    assert (flagged.policy, flagged.best_k) == (Policy.AUTO, 1)
    with pytest.raises(settings.SettingsError, match="--policy/--best-k: best_k"):
        settings.with_overrides(loaded, None, [], best_k=300)
    assert settings.with_overrides(loaded, None, [], best_k=4).policy is Policy.STRIPE


def test_status_shows_policy_tier_and_first_delivery_share() -> None:
    """A real session's snapshot (stripe, path 2 a backup), as the control socket sends it and
    `dupsession status` reads it back."""
    import dataclasses

    from rich.console import Console

    from dupsession.core.negotiate import Features
    from dupsession.core.session import Role, Session
    from dupsession.core.snapshot import OutboundStats
    from dupsession.report import PathReport, SessionReport
    from dupsession.status import Process, render
    from tests.support.session import handshake_keys

    session_id, keys = handshake_keys()
    schedule = Schedule(Policy.STRIPE, tiers=((2, Tier.BACKUP),))
    session = Session(Role.CLIENT, session_id, keys, 0.0, features=Features(schedule=schedule))
    for path_id in (1, 2):
        session.add_path(path_id, True, 0.0)
    snapshot = session.snapshot(1.0)
    paths = tuple(
        dataclasses.replace(path, outbound=OutboundStats(first, 0.0, 0.0))
        for path, first in zip(snapshot.paths, (300, 100), strict=True)
    )
    report = SessionReport(
        role="client",
        state="up",
        age=1.0,
        bytes_out=0,
        bytes_in=0,
        paths=tuple(PathReport(path.id, "up", core=path) for path in paths),
        core=dataclasses.replace(snapshot, paths=paths),
    )
    document = {"kind": "client", "pid": 1, "sessions": [report.as_dict()]}
    console = Console(width=200, record=True)
    console.print(render([Process.from_document(document)], plain=True))
    text = console.export_text()
    assert "  stripe" in text
    assert "backup" in text and "75% (300)" in text and "25% (100)" in text


def test_command_line_policy_reaches_the_settings(tmp_path: Path) -> None:
    from dupsession import cli

    (tmp_path / "none.toml").write_text("")
    args = cli._proxy_parser().parse_args(
        ["--config", str(tmp_path / "none.toml"), "--path", "udp://198.18.0.1:7300?tier=backup",
         "--path", "udp://198.18.0.2:7300", "--policy", "best-k", "--best-k", "1", "h", "22"]
    )  # fmt: skip
    loaded = cli._load_settings(args, "h")
    assert not isinstance(loaded, int)
    assert loaded.schedule() == Schedule(Policy.BEST_K, 1, ((1, Tier.BACKUP),))
    args = cli._proxy_parser().parse_args(
        ["--config", str(tmp_path / "none.toml"), "--path", "udp://198.18.0.1:7300",
         "--best-k", "0", "h", "22"]
    )  # fmt: skip
    assert cli._load_settings(args, "h") == cli.ExitCode.USAGE
