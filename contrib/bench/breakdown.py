"""Where a typing echo's time goes: `under_load.py --breakdown` and `--sched-trace`.

An analysis of one run's records, apart from the run itself: the netlab emulator's record of
small packets (emulator.PacketLog, one CLOCK_MONOTONIC for every namespace) split into client
out, network up, far end, network down and client in (dupsession's keystroke and echo followed
by DATA frame number); each downlink's queue; where client in goes (which path's copy came
first, in-order and TCP head-of-line waits, the typing chain's run-queue waits from /proc
schedstat and, with `--sched-trace`, from `perf sched timehist`). under_load.py runs the lab,
finds the chain's processes with `typing_chain` / `far_chain`, samples `schedstats` and calls
`breakdown` per method.
"""

from __future__ import annotations

import bisect
import os
import re
import statistics
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contrib.bench.lab_latency import cpu_by_process, pct

if TYPE_CHECKING:  # under_load.py imports this module
    from contrib.bench.under_load import Result
    from contrib.netlab import Lab
    from tests.lab.world import EchoSession


# -- where a keystroke's time goes (--breakdown) ----------------------------------------------

#: emulator.PacketLog's rows: read at, due at (None: dropped), size, IP protocol, source and
#: destination address (hex), ports, and (newer emulators) the payload's length and head (hex)
Row = tuple[Any, ...]
PARTS = ("client out", "network up", "far end", "network down", "client in")
_DATA = 3  #: dupsession's DATA frame type (dupsession.core.wire.FrameType.DATA)


def _typing_flows(r: Result, rows: list[Row], mine: set[str]) -> set[tuple[str, int]]:
    """The client's (address, port) pairs busy while the typing session typed alone."""
    i0, i1 = r.spans["idle"]
    seen: dict[tuple[str, int], int] = {}
    for row in rows:
        now, src, dst, sport, dport = row[0], *row[4:8]
        if i0 <= now < i1:
            key = (src, sport) if src in mine else (dst, dport) if dst in mine else None
            if key is not None:
                seen[key] = seen.get(key, 0) + 1
    return {k for k, n in seen.items() if n >= 20}


def data_frame(proto: int, head: str) -> int | None:
    """The number of the dupsession DATA frame a packet's payload starts with (UDP: the
    datagram; TCP: after the stream's u16 length), or None: an ACK of ours, the kernel's TCP
    ACK (no payload), anything else."""
    raw = bytes.fromhex(head)[2:] if proto == 6 else bytes.fromhex(head)
    if len(raw) >= 20 and raw[1] == _DATA:
        return int.from_bytes(raw[12:20], "big")
    return None


#: One copy of a DATA frame: read at, due at its end, size, IP protocol, uplink
Copy = tuple[float, float, int, int, str]


@dataclass(frozen=True, slots=True)
class EchoIn:
    """One busy echo's way back (monotonic s)."""

    there: float  #: the keystroke (and every frame before it) due at the far end
    back: float  #: the echo's first copy read by the emulator: it left the far end
    earliest: float  #: its earliest copy due at the client
    home: float  #: it and every frame before it due at the client: deliverable
    udp: float | None  #: the same counting only UDP copies (None: no UDP copy came)
    echoed: float  #: read by the bench
    copies: list[Copy]


class _Frames:
    """One direction's DATA frames of the typing session: each copy, by read time and by
    frame number (a resend keeps its number, so a frame's copies include its resends)."""

    def __init__(self, copies: list[tuple[float, float, int, int, int, str]]) -> None:
        copies.sort()
        self.at = [c[0] for c in copies]
        self.copies = copies
        self.by_frame: dict[int, list[Copy]] = {}
        for now, due, n, size, proto, uplink in copies:
            self.by_frame.setdefault(n, []).append((now, due, size, proto, uplink))

    def first_new(self, since: float, until: float) -> tuple[float, int] | None:
        """The first copy read in [since, until] of a frame none of whose copies came
        before `since`: (read at, frame number)."""
        for i in range(bisect.bisect_left(self.at, since), len(self.copies)):
            now, _, n, *_ = self.copies[i]
            if now > until:
                return None
            if self.by_frame[n][0][0] >= since:
                return now, n
        return None

    def earliest(self, n: int, proto: int | None = None) -> float | None:
        dues = [c[1] for c in self.by_frame.get(n, []) if proto is None or c[3] == proto]
        return min(dues) if dues else None

    def deliverable(self, n: int, proto: int | None = None) -> float | None:
        """When frame n and the frames before it (those recorded, up to 16 back) were all due:
        when an in-order receiver could hand frame n on."""
        dues = [self.earliest(m, proto) for m in range(n - 16, n + 1) if m in self.by_frame]
        if not dues or dues[-1] is None:
            return None
        return max(d for d in dues if d is not None)


def _echo_parts(
    r: Result, rows: list[Row], mine: set[str], came_in: list[EchoIn] | None = None
) -> dict[str, list[list[float]]]:
    """Per span, each keystroke's total echo time and its PARTS (s); each busy echo's
    copies into `came_in`. With the payload's head in the record, a keystroke and its echo
    are their DATA frames (an ACK, ours or the kernel's, is neither) and client in starts when
    the echo's frame and every frame before it were due at the client; from an older record,
    at the first packet back."""
    if r.method.kind != "dupsession" or (rows and len(rows[0]) < 10):
        return _echo_parts_by_packet(r, rows, mine)
    flows = _typing_flows(r, rows, mine)
    uplink = {addr: name for name, addr in r.uplinks.items()}
    up_copies: list[tuple[float, float, int, int, int, str]] = []
    down_copies: list[tuple[float, float, int, int, int, str]] = []
    for now, due, size, proto, src, dst, sport, dport, _, head in rows:
        if due is None or (n := data_frame(proto, head)) is None:
            continue
        if (src, sport) in flows:
            up_copies.append((now, due, n, size, proto, uplink.get(src) or src))
        elif (dst, dport) in flows:
            down_copies.append((now, due, n, size, proto, uplink.get(dst) or dst))
    up, down = _Frames(up_copies), _Frames(down_copies)
    parts: dict[str, list[list[float]]] = {"idle": [], "busy": []}
    for sent, echoed in zip(r.typed, r.echoed, strict=False):
        key = up.first_new(sent, echoed)
        there = up.deliverable(key[1]) if key is not None else None
        echo = down.first_new(there, echoed) if key is not None and there is not None else None
        if key is None or there is None or echo is None:
            continue
        out, (back, n) = key[0], echo
        home = down.deliverable(n)
        if home is None or home > echoed + 0.0005:
            continue
        span = next((name for name, (a, b) in r.spans.items() if a <= sent < b), "")
        if span == "busy" and came_in is not None:
            first, udp = down.earliest(n), down.deliverable(n, 17)
            assert first is not None
            came_in.append(EchoIn(there, back, first, home, udp, echoed, down.by_frame[n]))
        if span in parts:
            parts[span].append(
                [echoed - sent, out - sent, there - out, back - there, home - back, echoed - home]
            )
    return parts


def _echo_parts_by_packet(
    r: Result, rows: list[Row], mine: set[str]
) -> dict[str, list[list[float]]]:
    """`_echo_parts` by packet, not by frame (plain ssh, MPTCP; an older record): the first
    packet each way stands for the keystroke and the echo. A TCP segment without payload (the
    kernel's ACK) is neither when the record has payload lengths; without them, it may be
    taken for either, and so may a dupsession ACK."""
    flows = _typing_flows(r, rows, mine)
    rows = [row for row in rows if row[1] and (len(row) < 10 or row[8] > 0)]
    up = sorted((row[0], row[1]) for row in rows if (row[4], row[6]) in flows)
    down = sorted((row[0], row[1]) for row in rows if (row[5], row[7]) in flows)
    up_at, down_at = [u[0] for u in up], [d[0] for d in down]
    parts: dict[str, list[list[float]]] = {"idle": [], "busy": []}
    for sent, echoed in zip(r.typed, r.echoed, strict=False):
        j = bisect.bisect_left(up_at, sent)
        if j == len(up) or up[j][0] > echoed:
            continue
        out = up[j][0]
        there = min(due for now, due in up[j : j + 16] if now - out < 0.002)
        k = bisect.bisect_left(down_at, there)
        copies = [(now, due) for now, due in down[k : k + 64] if due <= echoed + 0.0005]
        if not copies:
            continue
        back = copies[0][0]
        home = min(due for now, due in copies if now - back < 0.002)
        span = next((n for n, (a, b) in r.spans.items() if a <= sent < b), "")
        if span in parts:
            parts[span].append(
                [echoed - sent, out - sent, there - out, back - there, home - back, echoed - home]
            )
    return parts


def _queue_lines(r: Result, rows: list[Row], uplinks: dict[str, str]) -> list[str]:
    """Each downlink's queue during the download: small packets' transit over its minimum."""
    b0, b1 = r.spans["busy"]
    lines = []
    for uplink, addr in uplinks.items():
        transit = [(row[0], row[1] - row[0]) for row in rows if row[1] and row[5] == addr]
        if not transit:
            continue
        floor = min(t for _, t in transit)
        waits = [(t - floor) * 1e3 for now, t in transit if b0 <= now < b1]
        if waits:
            lines.append(
                f"{uplink} downlink queue during the download (small packets, transit over its "
                f"minimum): p50 {pct(waits, 50):.1f}, p90 {pct(waits, 90):.1f}, "
                f"p99 {pct(waits, 99):.1f} ms"
            )
    return lines


def breakdown(r: Result, rows: list[Row], uplinks: dict[str, str]) -> list[str]:
    """A keystroke's echo time split where the emulator saw its packets (one clock: every
    namespace's CLOCK_MONOTONIC): client out (keystroke written -> its first packet read by
    the emulator), network up (-> due out at the far end: shaper queue and delay), far end
    (-> the echo's first packet read: relayd or sshd, the server side's processes), network
    down (-> due at the client; of a keystroke on every path the earliest), client in (-> the
    echo read by the bench: the client's processes); then the p99 during the download with
    each part in turn held at its idle median, and each downlink's queue. For dupsession the
    keystroke and the echo are their DATA frames (see `_echo_parts`): the kernel's TCP ACK of
    a keystroke's TCP copy leaves the far end at once and is due at the client before the
    echo, and counted as the echo it moved the far end's wait into client in."""
    if "idle" not in r.spans or "busy" not in r.spans:
        return []
    r.uplinks = uplinks
    mine = set(uplinks.values())
    came_in: list[EchoIn] = []
    parts = _echo_parts(r, rows, mine, came_in)
    lines = []
    for span, got in parts.items():
        if not got:
            continue
        cells = ", ".join(
            f"{name} {pct([p[i + 1] * 1e3 for p in got], 50):.1f}/"
            f"{pct([p[i + 1] * 1e3 for p in got], 99):.1f}"
            for i, name in enumerate(PARTS)
        )
        a, b = r.spans[span]
        typed = sum(1 for at in r.typed[: len(r.echoed)] if a <= at < b)
        lines.append(f"echo {span} ({len(got)} of {typed} matched), p50/p99 ms: {cells}")
    idle, busy = parts["idle"], parts["busy"]
    if idle and busy:
        medians = [statistics.median(p[i + 1] for p in idle) for i in range(len(PARTS))]
        cells = ", ".join(
            f"{name} {pct([(p[0] - p[i + 1] + medians[i]) * 1e3 for p in busy], 99):.0f}"
            for i, name in enumerate(PARTS)
        )
        lines.append(f"busy p99 with one part held at its idle median, ms: {cells}")
    return (
        lines
        + _queue_lines(r, rows, uplinks)
        + _client_in_lines(r, came_in)
        + _slowest_lines(r, rows, mine)
    )


def _slowest_lines(r: Result, rows: list[Row], mine: set[str], count: int = 3) -> list[str]:
    """Each span's `count` slowest echoes, with every copy of the keystroke's DATA frame and
    what became of it: lost in the emulator, or due at the far end (ms after typing). Why:
    the idle p99 at 5 % loss was keystrokes whose only fast copy was lost, which the parts
    above cannot show (they follow the copies that arrived); this listing found that `auto`
    sent a keystroke once on the fast uplink (docs/BENCHMARKS.md "Twins for `auto`")."""
    if r.method.kind != "dupsession" or not rows or len(rows[0]) < 10:
        return []
    flows = _typing_flows(r, rows, mine)
    uplink = {addr: name for name, addr in r.uplinks.items()}
    copies: dict[int, list[tuple[float, float | None, str]]] = {}
    for now, due, _, proto, src, _, sport, _, _, head in rows:
        if (src, sport) in flows and (n := data_frame(proto, head)) is not None:
            way = f"{uplink.get(src, src)}/{'tcp' if proto == 6 else 'udp'}"
            copies.setdefault(n, []).append((now, due, way))
    firsts = sorted((at[0][0], n) for n, at in copies.items())
    starts = [at for at, _ in firsts]
    lines = []
    for span, (a, b) in r.spans.items():
        echoes = [(e - t, t) for t, e in zip(r.typed, r.echoed, strict=False) if a <= t < b]
        for took, typed in sorted(echoes, reverse=True)[:count]:
            i = bisect.bisect_left(starts, typed)
            if i == len(firsts) or firsts[i][0] > typed + took:
                continue
            n = firsts[i][1]
            fates = ", ".join(
                f"{way} {'lost' if due is None else f'{(due - typed) * 1e3:.1f}'}"
                for _, due, way in sorted(copies[n])
            )
            lines.append(
                f"slow {span} echo {took * 1e3:.0f} ms, typed {typed - a:.2f} s in: keystroke "
                f"frame {n}'s copies, each lost or due at the far end (ms after typing): {fates}"
            )
    return lines


# -- where "client in" goes (--breakdown, --sched-trace) ---------------------------------------


def typing_chain(echo: EchoSession) -> dict[str, tuple[int, int]]:
    """The processes an echo passes through on the client: (pid, tid) by label."""
    chain = {"ssh": (echo.proc.pid, echo.proc.pid)}
    if echo.proxy is not None:
        try:
            pid = int(echo.proxy.pid_path.read_text())
        except (OSError, ValueError):
            pid = 0
        if pid:
            chain["dupsession"] = (pid, pid)
    reader = getattr(echo, "_reader", None)  # the thread that stamps each echo
    if isinstance(reader, threading.Thread) and reader.native_id is not None:
        chain["bench reader"] = (os.getpid(), reader.native_id)
    return chain


def far_chain(lab: Lab, relayd_pid: int | None = None) -> dict[str, tuple[int, int]]:
    """The far end's processes an echo passes through: relayd (its loop: the main thread;
    `relayd_pid`, or the server's only `relayd serve`), the typing session's `cat` (the newest
    bare `cat` in the server's namespace: EchoSession's) and the sshd above it."""
    server = Path(f"/run/netns/{lab.ns('server')}").stat().st_ino
    cats = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (entry / "ns" / "net").stat().st_ino != server:
                continue
            if (entry / "cmdline").read_bytes() == b"cat\0":
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cats.append((int(stat[19]), int(entry.name), int(stat[1])))  # start, pid, ppid
        except OSError:
            continue
    relayd = [
        pid for pid, (label, _) in cpu_by_process({server}).items() if label == "relayd serve"
    ]
    if relayd_pid is not None:
        relayd = [relayd_pid]
    found = {"relayd": (relayd[0], relayd[0])} if len(relayd) == 1 else {}
    if cats:
        _, cat, sshd = max(cats)
        found |= {"sshd": (sshd, sshd), "cat": (cat, cat)}
    return found


def schedstats(chain: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int, int]]:
    """/proc/PID/task/TID/schedstat of each: CPU ns, run-queue wait ns, timeslices."""
    found = {}
    for label, (pid, tid) in chain.items():
        try:
            text = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        found[label] = (int(text[0]), int(text[1]), int(text[2]))
    return found


def _schedstat_lines(r: Result) -> list[str]:
    """Mean run-queue wait per timeslice of each chain process, idle span against busy."""
    if len(r.schedstat) < 3:
        return []
    cells = []
    for label in r.chain:
        spans = []
        for a, b in ((0, 1), (1, 2)):
            x, y = r.schedstat[a].get(label), r.schedstat[b].get(label)
            if x is None or y is None:
                break
            slices = max(y[2] - x[2], 1)
            spans.append(f"{(y[1] - x[1]) / slices / 1e6:.2f} ms x {slices}")
        if len(spans) == 2:
            cells.append(f"{label} {spans[0]} idle, {spans[1]} busy")
    return ["run-queue wait per timeslice (schedstat, mean): " + "; ".join(cells)]


def record_scheduler(out: Path, seconds: float) -> None:
    """`perf record` the scheduler's switch and wake-up events of the whole machine for
    `seconds` into `out`, on CLOCK_MONOTONIC (the bench's and the emulator's clock)."""
    subprocess.run(
        ["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-a", "-o", str(out),
         "-e", "sched:sched_switch", "-e", "sched:sched_wakeup",
         "-e", "sched:sched_wakeup_new", "-e", "sched:sched_migrate_task",
         "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )  # fmt: skip


#: A `perf sched timehist --state` line: time, CPU, task[tid/pid], wait, wait after its
#: wake-up, run time (ms), its state when it left the CPU (R: preempted, still runnable)
TIMEHIST = re.compile(
    r"\s*([\d.]+)\s+\[\d+\]\s+.*\[(\d+)(?:/\d+)?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)"
)
#: One run of a task in perf's timehist: (woken at, ran from, ran until, the wait for a CPU
#: before it: after its wake-up, or all of it if the task had been preempted)
Run = tuple[float, float, float, float]


def _sched_runs(trace: Path, tids: set[int]) -> dict[int, list[Run]]:
    """Each run of `tids` in a `perf record` of scheduler events (`perf sched timehist`)."""
    out = subprocess.run(
        ["perf", "sched", "timehist", "--state", "-i", str(trace)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return _parse_timehist(out, tids)


def _parse_timehist(text: str, tids: set[int]) -> dict[int, list[Run]]:
    """Each run of `tids` in `perf sched timehist --state`'s output. A line is one run, printed
    when it ended: its wait time is the whole gap since the task's previous run and its sch
    delay the part after its wake-up. After a run that ended preempted (state R: still
    runnable, never asleep) the whole gap was a wait for a CPU; after one that ended asleep (S,
    D, ...) only the sch delay was."""
    runs: dict[int, list[Run]] = {}
    preempted: dict[int, bool] = {}
    for line in text.splitlines():
        m = TIMEHIST.match(line)
        if m is None or (tid := int(m.group(2))) not in tids:
            continue
        end = float(m.group(1))
        wait, delay, ran = (float(m.group(i)) / 1e3 for i in (3, 4, 5))
        start = end - ran
        cpu_wait = wait if preempted.get(tid) else delay
        runs.setdefault(tid, []).append((start - delay, start, end, cpu_wait))
        preempted[tid] = m.group(6).startswith("R")
    return runs


def _share_lines(label: str, runs: list[Run]) -> list[str]:
    """How a task spent the trace: on a CPU, waiting for one, asleep."""
    if len(runs) < 2:
        return []
    span = runs[-1][2] - runs[0][1]
    ran = sum(end - start for _, start, end, _ in runs)
    waited = sum(run[3] for run in runs[1:])
    waits = sorted(run[3] * 1e3 for run in runs[1:])
    return [
        f"{label} in the trace ({span:.1f} s): on a CPU {ran / span:.0%}, waiting for one "
        f"{waited / span:.0%} (each wait p99 {pct(waits, 99):.2f} ms, longest {waits[-1]:.1f}), "
        f"asleep {1 - (ran + waited) / span:.0%}"
    ]


def _woken(runs: list[Run], after: float) -> float | None:
    """When a task was first woken (or put back on a CPU) at or after `after`."""
    for woken, *_ in runs:
        if woken >= after:
            return woken
    return None


#: The sub-parts --sched-trace splits far end and client in into, each from one process's
#: first wake-up after the previous one (the far end: relayd writes the keystroke to sshd,
#: sshd to cat, cat back to sshd; the client: the echo's datagram reaches dupsession, it writes
#: to ssh, ssh to the bench's reader)
FAR_SPLIT = ("relayd in", "sshd in", "cat", "sshd + relayd out")
IN_SPLIT = ("to dupsession", "dupsession", "ssh", "bench reader")


def _wake_split(runs: dict[str, list[Run]], echo: EchoIn) -> dict[str, float] | None:
    """Far end and client in of one echo split at the chain's wake-ups (s), or None if a
    wake-up is missing or out of order."""
    names = ("sshd", "cat", "sshd", "dupsession", "ssh", "bench reader")
    marks = [echo.there]
    for i, name in enumerate(names):
        after = echo.home - 0.0005 if i == 3 else marks[-1]
        woken = _woken(runs.get(name, []), after)
        if woken is None:
            return None
        marks.append(woken)
    sshd_in, cat, sshd_out, dup, ssh, reader = marks[1:]
    if not marks[0] <= sshd_in <= cat <= sshd_out <= echo.back or not dup <= ssh <= reader:
        return None
    if reader > echo.echoed:
        return None
    parts = [sshd_in - echo.there, cat - sshd_in, sshd_out - cat, echo.back - sshd_out]
    parts += [dup - echo.home, ssh - dup, reader - ssh, echo.echoed - reader]
    return dict(zip(FAR_SPLIT + IN_SPLIT, parts, strict=True))


def _client_in_lines(r: Result, came_in: list[EchoIn]) -> list[str]:
    """Where client in goes: which path's copy of each busy echo's frame came first, how long
    the echo waited for an earlier frame (in order delivery), client in if only the UDP
    copies counted (a datagram no kernel holds behind a TCP hole), the slowest echoes' copies,
    whether the bench's CPU sampler ran while they were read, and (--sched-trace) far end and
    client in split at the chain's wake-ups, with each client process's run-queue wait."""
    if not came_in:
        return _schedstat_lines(r)
    proto = {6: "tcp", 17: "udp"}
    first: dict[str, int] = {}
    behind, from_udp = [], []
    for e in came_in:
        c = min(e.copies, key=lambda c: c[1])
        key = f"{c[4]}/{proto.get(c[3], c[3])}"
        first[key] = first.get(key, 0) + 1
        behind.append((e.home - e.earliest) * 1e3)
        from_udp.append((e.echoed - (e.udp if e.udp is not None else e.home)) * 1e3)
    lines = [
        "echo busy, earliest copy of the echo's DATA frame by path: "
        + ", ".join(f"{k} {n}" for k, n in sorted(first.items()))
        + f"; its wait for an earlier frame p50/p99 {pct(behind, 50):.1f}/{pct(behind, 99):.1f}"
        f" ms; client in counting only UDP copies p50/p99 {pct(from_udp, 50):.1f}/"
        f"{pct(from_udp, 99):.1f} ms"
    ]
    lines += _schedstat_lines(r)
    chain = {**r.chain, **r.far}
    runs: dict[str, list[Run]] = {}
    if r.sched_trace is not None and r.sched_trace.exists():
        by_tid = _sched_runs(r.sched_trace, {tid for _, tid in chain.values()})
        runs = {label: by_tid.get(tid, []) for label, (_, tid) in chain.items()}
    traced = [t for rs in runs.values() if rs for t in (rs[0][1], rs[-1][2])]
    t0, t1 = (min(traced), max(traced)) if traced else (0.0, -1.0)

    def waits(home: float, echoed: float) -> dict[str, float]:
        """Each client process's run-queue wait in the runs it started in [home, echoed]."""
        return {
            label: sum(run[3] for run in runs.get(label, []) if home <= run[1] <= echoed) * 1e3
            for label in r.chain
        }

    for label in ("relayd", "dupsession"):
        lines += _share_lines(label, runs.get(label, []))
    inside = [e for e in came_in if t0 <= e.there and e.echoed <= t1]
    if inside:
        per = [waits(e.home, e.echoed) for e in inside]
        cells = ", ".join(
            f"{label} {pct([w[label] for w in per], 50):.1f}/{pct([w[label] for w in per], 99):.1f}"
            for label in r.chain
        )
        total = [(e.echoed - e.home) * 1e3 for e in inside]
        lines.append(
            f"perf sched ({len(inside)} echoes in the trace): client in p50/p99 "
            f"{pct(total, 50):.1f}/{pct(total, 99):.1f} ms; run-queue wait within it "
            f"p50/p99 ms: {cells}"
        )
        splits = [(e, got) for e in inside if (got := _wake_split(runs, e)) is not None]
        if splits:
            cells = ", ".join(
                f"{name} {pct([g[name] * 1e3 for _, g in splits], 50):.1f}/"
                f"{pct([g[name] * 1e3 for _, g in splits], 99):.1f}"
                for name in FAR_SPLIT + IN_SPLIT
            )
            lines.append(f"split at wake-ups ({len(splits)} echoes), p50/p99 ms: {cells}")
            for label, parts in (("far end", FAR_SPLIT), ("client in", IN_SPLIT)):
                e, got = max(splits, key=lambda eg: sum(eg[1][n] for n in parts))
                cells = ", ".join(f"{n} {got[n] * 1e3:.1f}" for n in parts)
                lines.append(f"slowest {label} in the trace, split ms: {cells}")
    for e in sorted(came_in, key=lambda e: e.home - e.echoed)[:4]:
        packets = " ".join(
            f"{c[4]}/{proto.get(c[3], c[3])}{(c[1] - e.earliest) * 1e3:+.1f}" for c in e.copies
        )
        sampler = any(a < e.echoed and b > e.home for a, b in r.sampler)
        text = (
            f"slowest client in: {(e.echoed - e.home) * 1e3:.1f} ms after the echo was "
            f"deliverable ({(e.home - e.earliest) * 1e3:.1f} ms after its first copy); copies "
            f"due (ms after the first): {packets}; CPU sampler ran meanwhile: "
            f"{'yes' if sampler else 'no'}"
        )
        if e in inside:
            text += "; run-queue waits " + ", ".join(
                f"{k} {v:.1f}" for k, v in waits(e.home, e.echoed).items()
            )
        lines.append(text)
    return lines
