"""Two sessions with real keys, moved by hand: the sans-IO core's test harness.

`handshake_keys` runs the real one-round-trip handshake in memory; `Pair` joins a client and
an exit `Session` on those keys (aioquic's `client_and_server` shape); time is always passed in.
"""

from __future__ import annotations

from collections.abc import Iterable

from dupsession.core import wire
from dupsession.core.events import Event
from dupsession.core.handshake import ClientHandshake, ServerHandshake, SessionKeys
from dupsession.core.negotiate import Features
from dupsession.core.session import Role, Session, SessionConfig

UNIX_NOW = 1_800_000_000.0  #: the wall clock the handshakes see (replay windows)
T0 = 100.0
PSK = bytes(range(32))

Out = dict[int, list[bytes]]


def handshake_keys(
    psk: bytes = PSK, unix_now: float = UNIX_NOW, target: str = "127.0.0.1:22"
) -> tuple[bytes, SessionKeys]:
    """Run the real handshake in memory; return (session id, the keys both ends agreed)."""
    client = ClientHandshake(psk, target, unix_now)
    server = ServerHandshake(psk)
    frame = client.hello_frame(0)
    accepted = server.accept(server.verify_hello(frame, unix_now), unix_now)
    welcome = accepted.welcome_frame(server.auth, 0, frame[-wire.TAG_SIZE :])
    _, keys = client.accept(0, welcome)
    assert keys == accepted.keys, "client and exit derived different keys"
    return client.session_id, keys


def handshake() -> tuple[bytes, SessionKeys]:
    """`handshake_keys` with the defaults."""
    return handshake_keys()


class Pair:
    """A client and an exit session sharing real handshake keys, `paths` paths each."""

    def __init__(
        self,
        paths: int = 1,
        datagram: bool = True,
        client: SessionConfig | None = None,
        exit: SessionConfig | None = None,
        features: Features | None = None,
    ) -> None:
        sid, self.keys = handshake()
        self.client = Session(Role.CLIENT, sid, self.keys, T0, client, features)
        self.exit = Session(Role.EXIT, sid, self.keys, T0, exit, features)
        for pid in range(paths):
            self.client.add_path(pid, datagram, T0)
            self.exit.add_path(pid, datagram, T0)

    def peer(self, session: Session) -> Session:
        return self.exit if session is self.client else self.client

    def key_of(self, sender: Session) -> bytes:
        k = self.keys
        return k.client_to_exit if sender is self.client else k.exit_to_client

    def deliver(
        self, to: Session, out: Out, now: float, paths: Iterable[int] | None = None
    ) -> None:
        for pid, frames in out.items():
            if paths is None or pid in paths:
                for frame in frames:
                    to.receive_frame(frame, now, pid)

    def acks(self, sender: Session, frames: list[bytes]) -> list[wire.Ack]:
        key = self.key_of(sender)
        return [wire.decode_ack(wire.verify(key, f)) for f in frames if f[1] == wire.FrameType.ACK]

    def exchange(self, now: float, rounds: int = 10, step: float = 0.01) -> float:
        """Move everything both ways with `step` one-way delay for a few rounds, firing the
        timers that are due; returns the time after the last round."""
        for _ in range(rounds):
            for src in (self.client, self.exit):
                for side in (self.client, self.exit):
                    timer = side.get_timer()
                    if timer is not None and timer <= now:
                        side.handle_timer(now)
                self.deliver(self.peer(src), src.transmit(now), now + step)
            now += step
        return now

    def connect(self, now: float = T0, delay: float = 0.05) -> float:
        """Probe both ways on every path; returns the time the client heard back."""
        self.deliver(self.exit, self.client.transmit(now), now + delay)
        self.deliver(self.client, self.exit.transmit(now + delay), now + 2 * delay)
        drain(self.client)
        drain(self.exit)
        return now + 2 * delay


def drain(session: Session) -> list[Event]:
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def data_frames(out: Out, pid: int | None = 0) -> list[bytes]:
    """The DATA frames in `transmit`'s output for path `pid`; None: every path's, path by path."""
    frames = out.get(pid, []) if pid is not None else [f for fs in out.values() for f in fs]
    return [f for f in frames if f[1] == wire.FrameType.DATA]


def kinds(frames: list[bytes]) -> list[int]:
    return [f[1] for f in frames]


def run_timers(session: Session, now: float, until: float) -> list[tuple[float, Event]]:
    """Fire the session's timers up to `until` with the network dropping everything it sends.

    After each `handle_timer(t)` + `transmit(t)` the next timer must lie strictly after `t`:
    a timer due again at once would be a busy loop in the real glue.
    """
    seen: list[tuple[float, Event]] = []
    while (timer := session.get_timer()) is not None and timer <= until:
        now = max(now, timer)
        session.handle_timer(now)
        session.transmit(now)
        seen.extend((now, e) for e in drain(session))
        nxt = session.get_timer()
        assert nxt is None or nxt > now, f"timer due again at {now} (next {nxt})"
    return seen
