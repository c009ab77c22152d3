"""The emulator's small-packet record and the split of an echo from it (contrib/bench/
breakdown.py, run by under_load.py --breakdown).

Why: the breakdown took the first packet back after a keystroke for its echo, and the far end's
kernel ACKs a keystroke's TCP copy at once: that ACK was due at the client before the echo, so
the far end's wait was counted as the client's (issue 9: "client in" p99 29.9 ms, in fact
7.5; "far end" 17.5, in fact 31). The record now carries each payload's head, and the split
follows DATA frames by number.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from contrib.bench.breakdown import (
    EchoIn,
    Run,
    _echo_parts,
    _Frames,
    _parse_timehist,
    _share_lines,
    _wake_split,
    data_frame,
)
from contrib.bench.under_load import METHODS, Result
from contrib.netlab.emulator import PacketLog

CLIENT, SERVER = "198.18.1.2", "198.19.200.2"
SESSION = bytes(8)


def ip(proto: int, src: str, dst: str, transport: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(transport), 0, 0, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return header + transport


def data(n: int) -> bytes:
    """A DATA frame's first bytes: version, type 3, flags, path, session id, frame number."""
    return struct.pack("!BBBB8sQ", 1, 3, 0, 0, SESSION, n) + bytes(20)


def test_the_record_keeps_each_payloads_length_and_head(tmp_path: object) -> None:
    log = PacketLog(str(tmp_path))
    submit = log.wrap(lambda packet, now: now + 0.02)
    udp = struct.pack("!HHHH", 4000, 9000, 8 + 40, 0) + data(7)
    tcp_options = bytes(12)  # data offset 8 words: a header with timestamps
    tcp = struct.pack("!HHIIBBHHH", 4001, 9000, 1, 1, 8 << 4, 0x10, 0, 0, 0) + tcp_options
    submit(ip(17, CLIENT, SERVER, udp), 1.0)
    submit(ip(6, CLIENT, SERVER, tcp + struct.pack("!H", 40) + data(8)), 1.0)
    submit(ip(6, SERVER, CLIENT, tcp), 1.0)  # an ACK without payload
    (u, t, ack) = log.rows
    assert u[8:] == (40, data(7)[:24].hex())
    assert data_frame(17, u[9]) == 7
    assert t[8] == 42 and data_frame(6, t[9]) == 8
    assert ack[8:] == (0, "") and data_frame(6, ack[9]) is None


def rows_for(keystrokes: int, late_copies: bool = False) -> tuple[Result, list[tuple[object, ...]]]:
    """Keystroke i typed at 0.05 i: its DATA frame (number i) up on UDP, due at the far end
    20 ms later; the far end's kernel ACKs a TCP copy at once (due back 30 ms later), the echo
    (DATA frame i) leaves 2 ms after the keystroke arrived, is due 30 ms later and read 1 ms
    after that. With `late_copies`, each echo also has a second copy on the TCP path, read 1 ms
    after the next keystroke reached the far end (before that keystroke's echo), due 40 ms
    later."""
    result = Result(METHODS[0])
    result.uplinks = {"up1": ipaddress.IPv4Address(CLIENT).packed.hex()}
    me, far = result.uplinks["up1"], ipaddress.IPv4Address(SERVER).packed.hex()
    rows: list[tuple[object, ...]] = []
    for i in range(keystrokes):
        sent = 0.05 * i
        there = sent + 0.001 + 0.020
        rows.append((sent + 0.001, there, 111, 17, me, far, 4000, 9000, 83, data(i)[:24].hex()))
        rows.append((there, there + 0.030, 52, 6, far, me, 9000, 4001, 0, ""))
        rows.append(
            (there + 0.002, there + 0.032, 111, 17, far, me, 9000, 4000, 83, data(i)[:24].hex())
        )
        if late_copies:
            late, head = there + 0.050 + 0.001, (struct.pack("!H", 83) + data(i))[:24].hex()
            rows.append((late, late + 0.040, 137, 6, far, me, 9000, 4001, 85, head))
        result.typed.append(sent)
        result.echoed.append(there + 0.032 + 0.001)
    result.spans = {"idle": (0.0, 0.05 * keystrokes / 2), "busy": (0.05 * keystrokes / 2, 99.0)}
    return result, rows


def assert_parts(got: list[list[float]]) -> None:
    """Each echo as rows_for makes it: 1 ms out, 20 up, 2 at the far end, 30 down, 1 in."""
    for total, out, up, far_end, down, client_in in got:
        assert (out, up, far_end, down, client_in) == pytest.approx(
            (0.001, 0.020, 0.002, 0.030, 0.001), abs=1e-9
        )
        assert total == pytest.approx(0.054)


def test_the_far_ends_kernel_ack_is_not_the_echo() -> None:
    result, rows = rows_for(40)
    mine = set(result.uplinks.values())
    for span, got in _echo_parts(result, rows, mine).items():
        assert len(got) == 20, span
        assert_parts(got)
    # the same record without payloads: the ACK stands for the echo (the old split)
    old = [row[:8] for row in rows]
    far_end, client_in = _echo_parts(result, old, mine)["busy"][0][3:6:2]
    assert (far_end, client_in) == pytest.approx((0.0, 0.003), abs=1e-9)


def test_a_late_copy_of_the_previous_echo_is_not_this_keystrokes_echo() -> None:
    """The first copy down after a keystroke reached the far end is an older frame's (the slow
    path's copy of the previous echo): not a new frame, so not this keystroke's echo."""
    result, rows = rows_for(40, late_copies=True)
    for span, got in _echo_parts(result, rows, set(result.uplinks.values())).items():
        assert len(got) == 20, span
        assert_parts(got)


def test_an_echo_frame_due_after_the_bench_read_it_is_left_out() -> None:
    """A record whose only copy of an echo's frame is due after the bench read the echo (the
    copy that brought it is not in the record): the keystroke is left out of the split, not
    given a negative client in."""
    result, rows = rows_for(40)
    echo = rows[3 * 30 + 2]  # keystroke 30's echo (busy), its only copy
    assert echo[5] == rows[0][4] and data_frame(17, str(echo[9])) == 30
    rows[3 * 30 + 2] = (echo[0], result.echoed[30] + 0.002, *echo[2:])
    parts = _echo_parts(result, rows, set(result.uplinks.values()))
    assert (len(parts["idle"]), len(parts["busy"])) == (20, 19)
    assert_parts(parts["busy"])


def test_plain_ssh_split_by_packet_skips_the_far_ends_kernel_ack() -> None:
    """Plain ssh (no frames to follow): the first packet each way stands for the keystroke and
    the echo, but not a TCP segment without payload: the far end's kernel ACK of the keystroke,
    52 B and due at the client before the echo. (The client's ACK of the echo is in the record
    too, as in a real one.)"""
    result = Result(METHODS[2])
    assert result.method.kind == "ssh"
    me, far = (ipaddress.IPv4Address(a).packed.hex() for a in (CLIENT, SERVER))
    result.uplinks = {"up1": me}
    rows: list[tuple[object, ...]] = []
    for i in range(40):
        sent = 0.05 * i
        there = sent + 0.001 + 0.020
        rows.append((sent + 0.001, there, 100, 6, me, far, 40000, 22, 48, "17" * 24))
        rows.append((there, there + 0.030, 52, 6, far, me, 22, 40000, 0, ""))
        rows.append((there + 0.002, there + 0.032, 100, 6, far, me, 22, 40000, 48, "17" * 24))
        rows.append((there + 0.032, there + 0.052, 52, 6, me, far, 40000, 22, 0, ""))
        result.typed.append(sent)
        result.echoed.append(there + 0.032 + 0.001)
    result.spans = {"idle": (0.0, 1.0), "busy": (1.0, 99.0)}
    for span, got in _echo_parts(result, rows, {me}).items():
        assert len(got) == 20, span
        assert_parts(got)


def test_a_frame_is_deliverable_once_every_earlier_frame_is_due() -> None:
    frames = _Frames(
        [
            (1.00, 1.03, 5, 111, 17, "up1"),
            (1.01, 1.08, 6, 111, 17, "up2"),  # frame 6's only UDP copy: late
            (1.01, 1.04, 6, 137, 6, "up1"),  # its TCP copy, earlier
            (1.02, 1.05, 7, 111, 17, "up1"),
        ]
    )
    assert frames.earliest(7) == pytest.approx(1.05)
    assert frames.deliverable(7) == pytest.approx(1.05)
    assert frames.deliverable(7, proto=17) == pytest.approx(1.08)  # waits for frame 6's UDP
    assert frames.first_new(1.005, 2.0) == (1.01, 6)


def test_sched_trace_splits_far_end_and_client_in_at_each_wake_up() -> None:
    """relayd writes the keystroke to sshd (sshd woken), sshd to cat, cat back to sshd; the
    echo reaches dupsession, which writes to ssh, which writes to the bench's reader."""
    echo = EchoIn(
        there=1.000, back=1.010, earliest=1.040, home=1.040, udp=1.040, echoed=1.050, copies=[]
    )

    def run(woken: float) -> Run:
        return (woken, woken + 0.0001, woken + 0.0002, 0.0001)

    runs = {
        "sshd": [run(0.990), run(1.002), run(1.006)],  # an earlier wake-up is not this one's
        "cat": [run(1.003)],
        "dupsession": [run(1.041)],
        "ssh": [run(1.044)],
        "bench reader": [run(1.049)],
    }
    got = _wake_split(runs, echo)
    assert got is not None
    want = {"relayd in": 2, "sshd in": 1, "cat": 3, "sshd + relayd out": 4}
    want |= {"to dupsession": 1, "dupsession": 3, "ssh": 5, "bench reader": 1}
    assert {k: round(v * 1e3, 6) for k, v in got.items()} == want
    del runs["cat"]
    assert _wake_split(runs, echo) is None  # a missing wake-up: no split, not a wrong one


#: `perf sched timehist --state` as it prints (times in s, then wait time, sch delay and run
#: time in ms, the state the task left the CPU in). dupsession (tid 4242) runs 10 ms and is
#: preempted (R); runs again 10 ms later without a wake-up (its whole wait was for a CPU),
#: then sleeps (S); is woken 45 ms later and waits 5 ms for a CPU (only those count).
TIMEHIST_TEXT = """\
           time    cpu  task name                       wait time  sch delay   run time  state
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------  -----
     100.010000 [0000]  dupsession[4242]                    0.000      0.000     10.000      R
     100.011000 [0001]  relayd[777]                         3.000      1.000      1.000      S
     100.030000 [0000]  dupsession[4242]                   10.000      0.000     10.000      S
     100.050000 [0001]  python3[4250/4100]                  2.000      0.500      0.300      S
     100.090000 [0000]  dupsession[4242]                   50.000      5.000     10.000      R
"""


def test_sched_trace_counts_a_preempted_tasks_whole_wait_and_only_the_delay_after_a_sleep() -> None:
    runs = _parse_timehist(TIMEHIST_TEXT, {4242, 4250})
    assert set(runs) == {4242, 4250}  # relayd's tid was not asked for
    # (woken at, ran from, ran until, its wait for a CPU)
    assert runs[4242] == [
        pytest.approx((100.000, 100.000, 100.010, 0.0)),
        pytest.approx((100.020, 100.020, 100.030, 0.010)),  # after R: the whole 10 ms
        pytest.approx((100.075, 100.080, 100.090, 0.005)),  # after S: the 5 ms sch delay
    ]
    assert runs[4250] == [pytest.approx((100.0492, 100.0497, 100.050, 0.0005))]  # a thread
    # 90 ms from its first run's start: 30 on a CPU, 15 waiting for one, 45 asleep
    assert _share_lines("dupsession", runs[4242]) == [
        "dupsession in the trace (0.1 s): on a CPU 33%, waiting for one 17% (each wait p99 "
        "10.00 ms, longest 10.0), asleep 50%"
    ]


def test_our_own_ack_frame_back_before_the_echo_is_not_the_echo() -> None:
    """dupsession's own ACK frame back from the far end before the echo has a payload, so
    the by-packet split's payload-less filter keeps it: only following DATA frames tells it
    from the echo (review J4: the by-packet split in place of `_echo_parts` passed before)."""
    result, rows = rows_for(40)
    ack = (struct.pack("!BBBB8sI", 1, 4, 0, 0, SESSION, 0) + bytes(20))[:24].hex()
    extra = [
        (row[0], row[1], 120, 17, row[4], row[5], 9000, 4000, 60, ack)
        for row in rows
        if row[3] == 6 and row[8] == 0  # beside the far end's kernel ACK of each keystroke
    ]
    rows = sorted(rows + extra, key=lambda row: float(row[0]))  # type: ignore[arg-type]
    for got in _echo_parts(result, rows, set(result.uplinks.values())).values():
        assert len(got) == 20
        assert_parts(got)
