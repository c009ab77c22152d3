"""What every scheduling policy asks about a path: is it alive or stalled, which tier role
does it play now, is it benched (a stream path beside a datagram path on its link), how fast
does it deliver, how many frames may it take now. Policies (`redundant`, `best_k`, `stripe`)
decide from these answers; they share them so that a path means the same to each.
"""

from __future__ import annotations

from dupsession.core import wire
from dupsession.core.paths import Path, PathState
from dupsession.core.policy import Tier

#: A path that sent this many DATA copies with no sign of any arriving...
STALL_FRAMES = 3
#: ...for this long beyond its expected round trip (s) is stalled: no new data goes on it.
STALL_SLACK = 0.02
#: A stalled path is offered data again after this long (s): the only way to see it healed.
STALL_RETRY = 1.0
#: A path not heard from for this long (s) is not alive for tier decisions; ACK probes come
#: every probe interval (0.5 s), so this leaves room for one late probe and still lets a
#: backup take over within a second.
SILENCE = 0.75
#: Frames a stream path (no controller budget) takes per transmit in striping policies; the
#: glue's writable flag stops it when the socket buffer fills.
STREAM_BATCH = 64
#: Rate assumed for a path with no estimate yet, in frames per round trip.
INITIAL_RATE_FRAMES = 32
#: A stream path is benched while its own delivery estimate is at most this times that of
#: the datagram path on its link (`benched`): above it, the datagram path does not carry the
#: link (a UDP throttle), and the link would run at its rate. Flows sharing one bottleneck
#: never deliver more than it, so the stream path's estimate stays at or under the datagram
#: path's there; the margin covers the samples' noise (ACK batching: a few %).
BENCH_MARGIN = 1.25
#: Extra time (s) the peer may hold an ACK (its ack delay, 4 ms by default, and then some).
ACK_SLACK = 0.005


def sendable(path: Path) -> bool:
    return path.state is not PathState.DOWN and path.writable


def stalled(path: Path, now: float) -> bool:
    """Copies went out on `path` and none showed up at the peer for longer than a round trip
    should take: a blackout or a failed direction, seen long before the path times out."""
    since = path.unreported_since
    if since is None or path.sent_since_progress < STALL_FRAMES:
        return False
    rtt = path.rtt
    age = now - since
    if age <= max(2 * rtt.srtt, rtt.srtt + 4 * rtt.rttvar) + STALL_SLACK:
        return False
    if age > STALL_RETRY + 2 * rtt.srtt:
        # Give it another chance: a path that healed can only show it by carrying data.
        path.sent_since_progress, path.unreported_since = 0, None
        return False
    return True


def alive(path: Path, now: float) -> bool:
    """Usable and delivering: what tier decisions and best-k count on."""
    last = path.last_recv
    return (
        sendable(path)
        and (last is None or now - last <= max(SILENCE, 3 * path.rtt.srtt))
        and not stalled(path, now)
    )


def roles(paths: list[Path], now: float) -> tuple[list[Path], list[Path]]:
    """(paths that carry data by the policy, overflow paths), by tier; marks quiet backups."""
    primary: list[Path] = []
    overflow: list[Path] = []
    backup: list[Path] = []
    for path in paths:
        tier = path.tier
        if tier is Tier.PRIMARY:
            if sendable(path):
                primary.append(path)
            continue
        path.quiet = tier is Tier.BACKUP
        if sendable(path):
            (overflow if tier is Tier.OVERFLOW else backup).append(path)
    if not overflow and not backup:
        return primary, overflow  # the common case: no tiers, nothing to decide
    if any(alive(p, now) for p in primary):
        return primary, overflow
    if any(alive(p, now) for p in overflow):
        return primary + overflow, []  # the primaries are gone: saturated at zero capacity
    for path in backup:
        path.quiet = False
    return primary + overflow + backup, []


def benched(paths: list[Path], now: float) -> set[int]:
    """Stream paths that carry no bulk: a datagram path on the same access link (`Path.link`)
    is alive and carries that link at least as well. Two flows on one link each size their
    window from their own rate estimate, and the estimates of flows that share a bottleneck
    add up to more than it carries (each one's windowed maximum comes from the others' quiet
    moments): the excess stands in the router's queue, in front of every keystroke
    (docs/BENCHMARKS.md, "Under load"). One flow per link has no one to overestimate against.
    The datagram path keeps bulk at random loss too: its controller is loss-tolerant and its
    resends need no TCP retransmission timeout. A benched path still copies frames while its
    link's datagram path has budget to spare (an idle shell: every keystroke on every path),
    takes the frames no datagram path can carry (`_assign`, `_resend`: 16 KiB ones cut
    before a datagram path joined, review D1), and carries bulk again once that path dies
    or stalls.

    "Carries the link": both paths are past startup, each has an estimate of what it
    delivers, and the stream path's is at most BENCH_MARGIN times the datagram path's. A
    path that shares the bottleneck cannot deliver more than the bottleneck, so on a shared
    link the stream path's estimate (made in startup beside the datagram path's, or while
    it carried bulk before) stays under the datagram path's once that path fills the link;
    a UDP-only throttle (a policer: ISPs and hotel networks apply them, an on-path observer
    can impose one) leaves the datagram path's estimate far under the stream path's, and
    the stream path keeps bulk (review D2: benched anyway, the link ran at the UDP rate,
    0.94 instead of 9.8 Mbit/s). A throttle that starts later shows as the datagram path's
    estimate falling under the stream path's last one (kept while benched: a benched path
    is app-limited, and an app-limited sample never lowers an estimate).
    """
    carried: dict[str, float] = {}
    probing: set[str] = set()
    for path in paths:
        if not path.datagram or path.link is None or not alive(path, now):
            continue
        mode = getattr(path.cc, "mode", "startup")
        if mode == "drain":
            probing.add(path.link)
        rate = float("inf") if mode == "startup" else rate_estimate(path)
        carried[path.link] = max(carried.get(path.link, 0.0), rate)
    if not carried:
        return set()
    return {
        p.path_id
        for p in paths
        if not p.datagram
        and p.link in carried
        and p.link not in probing
        # A stream path still in its own startup beside a datagram path past startup joined
        # late (an SSH path after its login, a lost SYN, a config reload): it has no estimate
        # of what it delivers, and benched it never would (an app-limited sample never raises
        # one), so a UDP-only throttle would cap the link at the UDP rate (review E1, 0.95
        # instead of 10 Mbit/s). It carries bulk until its startup ends; on a shared link its
        # estimate then stays under the datagram path's and it is benched.
        and (carried[p.link] == float("inf") or getattr(p.cc, "mode", "") != "startup")
        and rate_estimate(p) <= BENCH_MARGIN * carried[p.link]
    }


def rank(primary: list[Path], now: float) -> tuple[list[Path], list[Path]]:
    """(paths that take new frames, fastest first; benched stream paths, copies only)."""
    bench = benched(primary, now)
    ranked = sorted(
        (p for p in primary if not stalled(p, now) and p.path_id not in bench), key=one_way_delay
    )
    if not ranked:  # every primary stalled: keep trying them rather than send nothing
        return sorted(primary, key=one_way_delay), []
    return ranked, [p for p in primary if p.path_id in bench]


def frame_limit(path: Path) -> int:
    return wire.MAX_DATAGRAM_FRAME if path.datagram else wire.MAX_STREAM_FRAME


def one_way_delay(path: Path) -> float:
    """Expected one-way delay (s): half the smoothed RTT, which includes queueing."""
    return path.rtt.srtt / 2


def rate_estimate(path: Path) -> float:
    """The controller's delivery-rate estimate (frames/s), 0 without one."""
    return float(getattr(path.cc, "btl_bw", 0.0))


def delivery_rate(path: Path) -> float:
    """Expected delivery rate (frames/s): the controller's estimate, or a first guess."""
    estimate = rate_estimate(path)
    return estimate if estimate > 0 else INITIAL_RATE_FRAMES / max(path.rtt.srtt, 0.001)


def path_rto(path: Path, rto: float) -> float:
    """A single copy's resend timeout: its own path's, never shorter than the session's (which
    follows the best path, too early for a frame on a slower one)."""
    return max(rto, path.rtt.timeout(ACK_SLACK))


def budget_now(path: Path, now: float) -> int:
    """Frames `path` may take now; stream paths (no controller limit) take a batch."""
    if not path.writable:
        return 0
    budget = path.cc.budget(now, path.rtt.srtt)
    return STREAM_BATCH if budget is None else budget
