"""Tiny measuring tools run inside lab namespaces: UDP echo and probe, TCP sink and sender.

Why not ping/iperf: they are not installed everywhere, and ping cannot say which uplink a
reply came back on or pick its source per probe as a bound UDP socket does. Stdlib only and
runnable by path, because they run under `ip netns exec`. Every tool is bounded in time.

    probe.py echo --bind ADDR --port P [--duration S]          UDP echo; prints "ready"
    probe.py udp --to ADDR --port P [--bind SRC] [--dev IF] [--count N] [--interval S]
    probe.py sink --bind ADDR --port P [--duration S]          TCP; prints JSON when done
    probe.py send --to ADDR --port P --bytes N [--bind SRC]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import selectors
import socket
import struct
import sys
import time
from collections.abc import Sequence

_HEADER = struct.Struct("!IQ")  # probe sequence number, send time (CLOCK_REALTIME ns)
_STAMP = struct.Struct("!QQ")  # the echo's receive and reply times (ns), after the header
_PROBE_MIN = _HEADER.size + _STAMP.size
# Kernel receive timestamps (Linux asm-generic values; Python does not export them): the time
# a datagram reached the socket, not when a busy machine got round to running us.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")


def _enable_stamps(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def _recv_stamped(sock: socket.socket) -> tuple[bytes, tuple[str, int], int]:
    """One datagram, its sender, and the kernel's CLOCK_REALTIME receive time in ns."""
    data, ancdata, _, peer = sock.recvmsg(65535, socket.CMSG_SPACE(_TIMESPEC.size))
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(value)
            return data, peer, sec * 1_000_000_000 + nsec
    return data, peer, time.time_ns()


def _bind_device(sock: socket.socket, dev: str | None) -> None:
    if dev:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())


def echo(bind: str, port: int, duration: float) -> None:
    """Echo every UDP datagram back to its sender until `duration` seconds have passed.

    A datagram long enough to be a probe gets the echo's receive and reply times stamped into
    it: all namespaces share one clock, so the prober can split the RTT into one-way delays
    and leave out the time this process took to be scheduled and answer.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _enable_stamps(sock)
    sock.bind((bind, port))
    print("ready", flush=True)
    end = time.monotonic() + duration
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer, rx_ns = _recv_stamped(sock)
        except TimeoutError:
            break
        if len(data) >= _PROBE_MIN:
            stamp = _STAMP.pack(rx_ns, time.time_ns())
            data = data[: _HEADER.size] + stamp + data[_PROBE_MIN:]
        sock.sendto(data, peer)


def udp_probe(
    to: str,
    port: int,
    *,
    bind: str | None = None,
    dev: str | None = None,
    count: int = 20,
    interval: float = 0.01,
    wait: float = 1.0,
    size: int = 64,
) -> dict[str, object]:
    """Send `count` probes `interval` apart; collect echoes until `wait` after the last one.

    RTTs come from the send time carried in each probe, so a late reply to an earlier probe
    is still measured correctly. `out_ms` / `back_ms` are the one-way delays (one clock for
    all namespaces, kernel receive timestamps); `rtt_ms` is their sum: the network's RTT,
    without the echo's turnaround time, which is `turn_ms`.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _enable_stamps(sock)
    _bind_device(sock, dev)
    if bind:
        sock.bind((bind, 0))
    sock.setblocking(False)
    pad = b"\0" * max(_STAMP.size, size - _HEADER.size)
    rtts: dict[int, tuple[int, int, int, int]] = {}
    sent = 0
    start = time.monotonic()
    deadline = start + count * interval + wait

    def drain() -> None:
        while True:
            try:
                data, _, now_ns = _recv_stamped(sock)
            except BlockingIOError:
                return
            if len(data) >= _PROBE_MIN:
                seq, t_ns = _HEADER.unpack_from(data)
                echo_rx, echo_tx = _STAMP.unpack_from(data, _HEADER.size)
                rtts.setdefault(seq, (t_ns, echo_rx, echo_tx, now_ns))

    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    while True:
        now = time.monotonic()
        if sent < count and now >= start + sent * interval:
            # An error (unreachable right now, link down) counts as a lost probe.
            with contextlib.suppress(OSError):
                sock.sendto(_HEADER.pack(sent, time.time_ns()) + pad, (to, port))
            sent += 1
            continue
        if now >= deadline or (sent == count and len(rtts) == count):
            break
        next_send = start + sent * interval if sent < count else deadline
        if sel.select(max(0.0, min(next_send, deadline) - now)):
            drain()
    drain()
    sel.close()
    sock.close()
    stamps = [rtts[k] for k in sorted(rtts)]
    return {
        "sent": sent,
        "received": len(stamps),
        "lost": sent - len(stamps),
        "rtt_ms": [(d - c + b - a) / 1e6 for a, b, c, d in stamps],
        "out_ms": [(b - a) / 1e6 for a, b, _, _ in stamps],
        "back_ms": [(d - c) / 1e6 for _, _, c, d in stamps],
        "turn_ms": [(c - b) / 1e6 for _, b, c, _ in stamps],
    }


def sink(bind: str, port: int, duration: float) -> dict[str, float]:
    """Accept one TCP connection and read it to EOF; report bytes and seconds taken."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(1)
    srv.settimeout(duration)
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(duration)
    total = 0
    first = last = time.monotonic()
    while chunk := conn.recv(1 << 20):
        if total == 0:
            first = time.monotonic()
        total += len(chunk)
        last = time.monotonic()
    conn.close()
    srv.close()
    return {"bytes": total, "seconds": last - first}


def send(to: str, port: int, nbytes: int, *, bind: str | None = None, timeout: float = 60) -> None:
    """Connect and write `nbytes` zero bytes, then close."""
    sock = socket.create_connection((to, port), timeout=timeout, source_address=(bind or "", 0))
    block = b"\0" * (1 << 16)
    left = nbytes
    while left > 0:
        n = sock.send(block[: min(left, len(block))])
        left -= n
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # wait for the sink to close: the bytes were all read
    sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="netlab probes")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("echo")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=60.0)
    p = sub.add_parser("udp")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind")
    p.add_argument("--dev")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--wait", type=float, default=1.0)
    p.add_argument("--size", type=int, default=64, help=f"bytes, at least {_PROBE_MIN}")
    p = sub.add_parser("sink")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=60.0)
    p = sub.add_parser("send")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--bind")
    args = parser.parse_args(argv)
    if args.cmd == "echo":
        echo(args.bind, args.port, args.duration)
    elif args.cmd == "udp":
        result = udp_probe(
            args.to,
            args.port,
            bind=args.bind,
            dev=args.dev,
            count=args.count,
            interval=args.interval,
            wait=args.wait,
            size=args.size,
        )
        print(json.dumps(result))
    elif args.cmd == "sink":
        print(json.dumps(sink(args.bind, args.port, args.duration)), flush=True)
    else:
        send(args.to, args.port, args.bytes, bind=args.bind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
