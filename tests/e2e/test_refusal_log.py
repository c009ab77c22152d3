"""relayd's refused-handshake log: one line per refusal with the source address (what
fail2ban's filter in contrib/fail2ban/relayd.conf matches), rate-limited so a flood of junk
cannot flood the log."""

from __future__ import annotations

import configparser
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from dupsession.core import wire
from tests.support.attack import Attacker
from tests.support.relay import Relay

FILTER = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "relayd.conf"
FLOOD = 300


def _bad_hello() -> bytes:
    """A HELLO-shaped datagram (right version, type and size) whose tag cannot verify."""
    prefix = bytes([wire.VERSION, wire.FrameType.HELLO, 0, 1]) + os.urandom(8)
    return prefix + os.urandom(wire.HELLO_SIZE - len(prefix))


def _failregex() -> re.Pattern[str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(FILTER)
    pattern = parser["Definition"]["failregex"]
    # fail2ban's <HOST> tag, reduced to what this test sends from.
    return re.compile(pattern.replace("<HOST>", r"(?P<host>[0-9.]+)"))


def test_refused_handshakes_are_logged_per_source_and_rate_limited(
    relays: Callable[..., Relay],
) -> None:
    relay = relays(allow=["127.0.0.1:9"])
    attacker = Attacker("127.0.0.9")
    try:
        started = time.monotonic()
        for _ in range(FLOOD):
            attacker.send(_bad_hello(), (relay.host, relay.port))
        relay.wait_for_log(r"refused handshake from 127\.0\.0\.9 port \d+: bad key or garbage")
        time.sleep(0.5)  # the bucket refills: the next refusal also reports the suppressed count
        attacker.send(_bad_hello(), (relay.host, relay.port))
        relay.wait_for_log(r"\(\d+ similar lines suppressed\)")
        elapsed = time.monotonic() - started
        assert attacker.received == 0, "a refused handshake was answered"
    finally:
        attacker.close()
    matcher = _failregex()
    hosts = [m["host"] for line in relay.log.splitlines() if (m := matcher.search(line))]
    assert hosts and set(hosts) == {"127.0.0.9"}, relay.log
    # burst 20 plus 10 lines a second: far fewer lines than refusals.
    assert len(hosts) <= 20 + 10 * elapsed + 1, (len(hosts), elapsed)
    assert len(hosts) < FLOOD / 3, len(hosts)
