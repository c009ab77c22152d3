"""The DATA receive path, every copy of every frame: duplicates dropped unhashed (or counted
against the first copy's tag), the window and size bounds, the tag check, the per-path
counters, and the bulk case, the stream's next frames of one read taken as one run. The hot
loop of the protocol (`contrib/bench/core.py`): helpers are inlined on purpose.
"""

from __future__ import annotations

import hmac
import struct

from dupsession.core import wire
from dupsession.core.delivery import Delivery
from dupsession.core.paths import EWMA_GAIN, PathState
from dupsession.core.receiver import ARRIVAL_MEMORY, Payload
from dupsession.core.session_base import SessionState

# Frame-layout constants bound once: these run for every copy.
_DATA_MIN = wire.DATA_HEADER.size + wire.TAG_SIZE
_TAG = wire.TAG_SIZE
_DATAGRAM_DATA_MAX = wire.MAX_DATAGRAM_FRAME
_same_tag = hmac.compare_digest
_DATA = int(wire.FrameType.DATA)
_SEQ_AT = struct.Struct("!Q").unpack_from
_SEQ_OFFSET = wire.PREFIX.size
_PAYLOAD_AT = wire.DATA_HEADER.size
_FIN = int(wire.DataFlags.FIN)
_UP = PathState.UP


class ReceiveData(Delivery):
    def _receive_data(self, frame: bytes, now: float, path_id: int | None) -> None:  # noqa: C901, PLR0912, PLR0915
        # The hot path: every copy of every frame comes through here, so helpers are inlined.
        receiver = self.receiver
        if len(frame) < _DATA_MIN:
            self.bad_frames += 1
            return
        seq = _SEQ_AT(frame, _SEQ_OFFSET)[0]
        path = self.paths.get(path_id) if path_id is not None else None
        if seq < receiver.cumulative or seq in receiver.held:  # `Receiver.is_duplicate`
            # Never hashed: it cannot change the stream. Believed only if it carries the tag
            # of the first, verified copy (constant-time compare): a forged copy must not
            # count into `data_recv`, which the peer's congestion controller trusts, nor arm
            # an ACK. Too old to be remembered: dropped uncounted.
            slot = seq % ARRIVAL_MEMORY
            first = receiver.arrivals[slot]  # `Receiver.first_arrival`, inlined
            if first is None or first[0] != seq:
                self.stale_frames += 1
                return
            _, first_at, first_path, first_tag, counted = first
            if not _same_tag(first_tag, frame[-_TAG:]):
                self.bad_frames += 1
                if path is not None:
                    path.bad_frames += 1
                return
            self.duplicates += 1
            # A later copy of a frame that just arrived is redundancy, already acked with the
            # first copy: acking it again would send an ACK on every path per copy. A copy
            # that comes about a resend timeout after the first is a resend: our ACK was lost
            # (half of our own estimate, as the sender's timer may run shorter than ours).
            # Only a copy that came on a known path (an address the glue validated), at most one
            # per half resend timeout: a replayed stale frame must not make us send ACKs.
            half_rto = self.recovery.rto_value / 2
            if (
                now - first_at >= half_rto
                and path is not None
                and now - self._dup_ack_at >= half_rto
            ):
                self._dup_ack_at = now
                acks = self.acks
                if acks.since is None:  # `AckPending.note`, inlined
                    acks.since = now
                acks.count += 1
            # Each path's count takes a frame once: a replayed genuine copy inflates nothing.
            if path is not None:
                bit = 1 << path.path_id
                if not counted & bit:
                    receiver.arrivals[slot] = (seq, first_at, first_path, first_tag, counted | bit)
                    path.data_recv += 1
                    inbound = path.inbound
                    inbound.frames += 1
                    if first_path != path.path_id:
                        inbound.lag += EWMA_GAIN * ((now - first_at) - inbound.lag)
                else:  # sent on this path again: arrived, for the loss measure only
                    path.repeats_recv += 1
            return
        if seq >= receiver.advertised_end:  # `Receiver.in_window`, inlined
            self.stale_frames += 1
            return
        # Memory is bounded in bytes, not only in frames (review A12): no peer makes a frame
        # above its path kind's maximum (the scheduler never does), and frames held out of
        # order stay within `window_bytes`; a frame beyond that is dropped unacked, like one
        # beyond the window, and resent by the sender once the hole is filled.
        size = len(frame)
        if size > (
            _DATAGRAM_DATA_MAX if path is not None and path.datagram else self._stream_data_max
        ):
            self.bad_frames += 1
            if path is not None:
                path.bad_frames += 1
            return
        if seq != receiver.cumulative and receiver.held_bytes + size > self._held_limit:
            self.stale_frames += 1
            return
        # While the consumer is paused the frozen window still spans `window_frames` frames of
        # up to 65 499 bytes each (review H1): what is delivered past the pause, plus what is
        # held, stays within `_held_limit` bytes too. A frame beyond it is dropped unacked,
        # like one beyond the window: the sender keeps it and resends it.
        if (
            self._receive_paused
            and self._paused_bytes + receiver.held_bytes + size - _DATA_MIN > self._held_limit
        ):
            self.stale_frames += 1
            return
        try:
            fin, payload = self._open_data(frame)
        except wire.FrameError:
            self.bad_frames += 1
            if path is not None:
                path.bad_frames += 1
            return
        acks = self.acks
        if acks.since is None:
            acks.since = now
        acks.count += 1
        if path is not None:
            if path.state is _UP and self._all_down_since is None:  # `_heard`'s common case
                path.bytes_recv += size
                path.last_recv = now
            else:
                self._heard(path, now, size)
            path.data_recv += 1
            inbound = path.inbound
            inbound.frames += 1
            inbound.first += 1
            inbound.lag -= EWMA_GAIN * inbound.lag
        delivered = receiver.accept(
            seq, fin, payload, now, -1 if path is None else path.path_id, frame[-_TAG:]
        )
        if delivered or receiver.fin_delivered:
            self._deliver(delivered, now)

    def _receive_run(self, frames: list[bytes], start: int, now: float, path_id: int) -> int:
        """Take the DATA frames from `frames[start]` on that are the stream's next ones, in
        order, on a live path; return the index of the first frame not taken.

        The same checks and bookkeeping as `_receive_data` (each frame's size, number, window
        and tag, first), but the run is delivered at once: one decryption, one delivery, one
        update of the path's counters and the ACK owed, instead of one per frame (at 1196-byte
        frames a bulk receiver handles 840 frames per MB: docs/BENCHMARKS.md).
        """
        receiver, path = self.receiver, self.paths.get(path_id)
        if path is None or path.state is not _UP or self._all_down_since is not None:
            return start
        if self.state is not SessionState.OPEN:
            return start
        if self._receive_paused:
            return start  # bounded in bytes, frame by frame, by `_receive_data`
        seq = first = receiver.cumulative
        end, held = receiver.advertised_end, receiver.held
        limit = _DATAGRAM_DATA_MAX if path.datagram else self._stream_data_max
        verified_tag = self._data_tag
        view = memoryview
        payloads: list[Payload] = []
        tags: list[bytes] = []
        size, fin, at, count = 0, False, start, len(frames)
        while at < count and seq < end:
            frame = frames[at]
            length = len(frame)
            if (
                length < _DATA_MIN
                or length > limit
                or frame[1] != _DATA
                or _SEQ_AT(frame, _SEQ_OFFSET)[0] != seq
                or seq in held
            ):
                break
            # `wire.open_data` spelled out (a tuple less per frame): the tag over the header
            # and payload (`wire.data_tag_check`), then the payload as a view into the frame
            tag = verified_tag(frame)
            if tag is None:
                break  # `receive_frame` counts it
            payloads.append(view(frame)[_PAYLOAD_AT:-_TAG])
            tags.append(tag)
            size += length
            seq += 1
            at += 1
            if frame[2] & _FIN:
                fin = True
                break
        taken = at - start
        if not taken:
            return start
        acks = self.acks
        if acks.since is None:
            acks.since = now
        acks.count += taken
        path.bytes_recv += size
        path.last_recv = now
        path.data_recv += taken
        inbound = path.inbound
        inbound.frames += taken
        inbound.first += taken
        inbound.lag *= (1 - EWMA_GAIN) ** taken
        payloads += receiver.accept_run(first, tags, fin, now, path.path_id)
        self._deliver(payloads, now)
        return at
