"""The in-flight limit of a stream path (TCP, SSH): `StreamWindow`, ModelRate without pacing.

Stream paths have the kernel's congestion control on the wire; their controller only bounds
what we hand the socket: the kernel's window, its unsent queue and the routers' queues behind
them hold no more than about one bandwidth-delay product of ours, so a UDP path on the same
uplink and other sessions' keystrokes do not wait behind it.
"""

from __future__ import annotations

from typing import Any

from dupsession.core.congestion import ACK_AGGREGATION, INITIAL_WINDOW, MIN_WINDOW, ModelRate

#: A stream path's window after startup, in bandwidth-delay products: enough above 1 for the
#: rate estimate to grow when the path frees up (a window-limited flow delivers up to this
#: times its estimate), little enough that the queue it can stand is a quarter of a BDP, not
#: BBR's full one (the kernel's BBR under it sizes its own window at 2x its estimate). A
#: round that found a standing queue holds one BDP (plus the peer's ACK batching) instead.
STREAM_CWND_GAIN = 1.25
#: A stream path's window spans at least this long (s) at its rate: on loopback or a LAN the
#: min RTT is a fraction of a ms, while two busy event loops take many ms to turn a frame into
#: an ACK; a window sized from the minimum then starved the path (2 UDP + 1 TCP on loopback:
#: 52 -> 37 MB/s). Paths with a min RTT above 32 ms are not affected.
STREAM_MIN_WINDOW_TIME = 0.04


class StreamWindow(ModelRate):
    """In-flight limit for a stream path (TCP, SSH): ModelRate's estimates, no pacing.

    The kernel paces and controls congestion on the wire, but it takes whatever we write: its
    window (BBR's is ~2x its own estimate), TCP_NOTSENT_LOWAT's unsent bytes and the
    transport's buffer all stand in front of the bottleneck, and on a shared uplink that
    standing queue is what the UDP path's controller backs off from and every keystroke waits
    behind (docs/BENCHMARKS.md, "Netlab: typing beside a download"). So the bytes we sent on
    the path and the peer has not reported received stay within `STREAM_CWND_GAIN` times the
    delivery rate times the minimum RTT, at least `MIN_WINDOW` frames (a stream path's frames
    may be 16 KiB; the peer acks a short window by its 4 ms timer); the rest waits
    in the core, where the scheduler can still put it on another path.

    A stream path loses nothing while its connection lives: silence is a stall, not loss, so
    in-flight is not written off by time (frames a dead connection took are found lost from
    the echoed counters once a new connection carries ACKs, as on datagram paths).
    """

    __slots__ = ()
    #: None: what varies a stream path's RTT samples is mostly the kernel's own window and
    #: queue, ours to bound, not delay jitter (review H2 is about datagram paths).
    noise_gain = 0.0

    def bdp(self, srtt: float) -> float:
        if not self.btl_bw:
            return float(INITIAL_WINDOW)
        return self.btl_bw * max(self._rtt(srtt) + ACK_AGGREGATION, STREAM_MIN_WINDOW_TIME)

    def cwnd(self, srtt: float) -> int:
        if self.mode == "startup":
            return max(MIN_WINDOW, super().cwnd(srtt))
        if self.mode == "probe-rtt":
            return max(MIN_WINDOW, int(self.bdp(srtt) / 2))
        gain = 1.0 if self._queue_round else STREAM_CWND_GAIN
        return max(MIN_WINDOW, int(gain * self.bdp(srtt)))

    def budget(self, now: float, srtt: float) -> int | None:
        return max(0, self.cwnd(srtt) - self.inflight)

    def wake_at(self, srtt: float) -> float | None:
        return None  # window-limited only: the peer's ACKs open it, and they wake the session

    def snapshot(self) -> dict[str, Any]:
        state = super().snapshot()
        state["kind"] = "stream-window"
        state["pacing_fps"] = None  # the kernel paces
        return state
