"""Config keys of issue 11: `encrypt`, `compress`, `[[forward]]`: read, checked, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dupsession import settings
from dupsession.core.negotiate import Compress


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('paths = ["udp://198.18.0.1:7300"]\n' + text)
    return path


def test_encrypt_and_compress_from_the_file_and_per_host(tmp_path: Path) -> None:
    config = write(tmp_path, 'encrypt = true\ncompress = "on"\n[hosts.b]\ncompress = "off"\n')
    top = settings.load(config, "a")
    assert (top.encrypt, top.compress) == (True, Compress.ON)
    assert settings.load(config, "b").compress is Compress.OFF
    flags = settings.with_overrides(top, None, [], None, False, compress="auto")
    assert (flags.encrypt, flags.compress) == (False, Compress.AUTO)
    assert settings.load(write(tmp_path, ""), None).compress is Compress.AUTO  # the default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('encrypt = "yes"\n', "'encrypt' must be true or false"),
        ('compress = "max"\n', "'compress' must be one of off, on, auto"),
        ('[[forward]]\ntarget = "h:1"\n', 'needs listen = "[BIND:]LPORT"'),
        ('[[forward]]\nlisten = "1"\n', 'needs target = "HOST:PORT"'),
        ('[[forward]]\nlisten = "1"\ntarget = "h:1"\nbind = "x"\n', "unknown key bind"),
        ('[[forward]]\nlisten = "70000"\ntarget = "h:1"\n', "port out of range"),
        ("forward = 3\n", "must be [[forward]] tables"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(settings.SettingsError, match=message.replace("[", r"\[")):
        config = write(tmp_path, text)
        settings.load(config, None)
        settings.load_forwards(config)


def test_forward_entries(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[[forward]]\nlisten = "5901"\ntarget = "desktop:5900"\n'
        '[[forward]]\nlisten = "[::1]:8080"\ntarget = "[fd00::5]:80"\n',
    )
    one, two = settings.load_forwards(config)
    assert str(one) == "127.0.0.1:5901 -> desktop:5900"
    assert str(two) == "[::1]:8080 -> [fd00::5]:80" and two.target == "[fd00::5]:80"
