"""Delivery of the peer's stream to our consumer: the payloads of frames taken in order are
decrypted, decoded when compressed, and handed on as `StreamData`/`StreamEnded` events; a full
consumer (or too much compressed input waiting) freezes the receive window.
"""

from __future__ import annotations

from dupsession.core import wire
from dupsession.core.compress import INFLOW_BACKLOG_LIMIT, CompressionError, Inflow
from dupsession.core.events import StreamData, StreamEnded
from dupsession.core.receiver import Payload
from dupsession.core.session_base import SessionBase, SessionState


class Delivery(SessionBase):
    def pause_receiving(self, paused: bool) -> None:
        """The local consumer is full: stop opening the peer's window until it drains.

        When it drains, the wider window goes out in an ACK at once: a peer that filled the
        frozen window sends nothing more, so no DATA would prompt that ACK until the next
        probe interval, and the stream would stall that long every time.
        """
        self._consumer_paused = paused
        if self._inflow is not None:
            self._inflow.paused = paused
        self._update_receive_pause(force=True)

    def _update_receive_pause(self, force: bool = False) -> None:
        """Freeze the window while the consumer is full or too much compressed input waits
        undecoded (bounded memory: the peer cannot push more than the limit past us)."""
        inflow = self._inflow
        paused = self._consumer_paused or (
            inflow is not None and inflow.backlog > INFLOW_BACKLOG_LIMIT
        )
        if paused == self._receive_paused and not force:
            return
        if paused and not self._receive_paused:
            # Counted from the freeze: a repeated pause (the consumer's pause_writing again)
            # must not restart the count, or each one would let another window through.
            self._paused_bytes = 0
        self._receive_paused = paused
        receiver = self.receiver
        before = receiver.advertised_end
        receiver.pause(paused)
        if not paused and receiver.window_end() > before:
            self.acks.window_update = True

    def _deliver(self, delivered: list[Payload], now: float) -> None:
        """Hand the stream's next bytes (and its end, once the FIN frame is delivered) on:
        decrypted, then decoded if compressed, then to the consumer as events. The payloads
        (views into their frames) are copied once here: joined, or decrypted."""
        receiver = self.receiver
        inflow = self._inflow
        if self._receive_paused:  # what `ReceiveData` bounds while the window is frozen
            self._paused_bytes += sum(map(len, delivered))
        if inflow is not None and self._decrypt is None:
            # The decoder joins each record from the payload views (a record spans frames):
            # one copy, where joining the run first made two.
            decoder = inflow.decoder
            for payload in delivered:
                decoder.feed(payload)
            self._after_feed(inflow, now)
            return
        joined = delivered[0] if len(delivered) == 1 else b"".join(delivered)  # 0: FIN alone
        if joined and self._decrypt is not None:
            # in stream order, and only bytes of frames whose tag verified: encrypt-then-MAC
            data = self._decrypt(joined)
        else:
            data = joined if type(joined) is bytes else bytes(joined)
        if inflow is not None:
            inflow.decoder.feed(data)
            self._after_feed(inflow, now)
            return
        if data:
            self.bytes_in += len(data)
            self._events.append(StreamData(data))
        if receiver.fin_delivered:
            self._emit_stream_end()
            self._check_done(now)

    def _after_feed(self, inflow: Inflow, now: float) -> None:
        # Decode only once a whole record is in (records span many frames), not per frame.
        decoder = inflow.decoder
        if inflow.more or decoder.backlog >= decoder.need or self.receiver.fin_delivered:
            self._drain(now)
        elif decoder.backlog > INFLOW_BACKLOG_LIMIT:
            self._update_receive_pause()

    def _drain(self, now: float) -> None:
        """Decode what the consumer can take now (a compressed direction); the stream ends
        once the FIN is delivered and every record is decoded."""
        inflow = self._inflow
        if inflow is None or self.state is SessionState.CLOSED:
            return
        self._drain_at = now
        taken = self.bytes_in
        try:
            for chunk in inflow.drain():
                self.bytes_in += len(chunk)
                self._events.append(StreamData(chunk))
        except CompressionError as exc:
            self._finish(wire.CloseCode.PROTOCOL_ERROR, str(exc), by_peer=False, now=now)
            return
        if self._peer_close is not None and self.bytes_in != taken:
            self._peer_close_at = now  # the consumer takes more: the hold goes on
        self._update_receive_pause()
        if self.receiver.fin_delivered and not inflow.more and not inflow.paused:
            if inflow.backlog:
                reason = "compressed stream ends inside a record"
                self._finish(wire.CloseCode.PROTOCOL_ERROR, reason, by_peer=False, now=now)
                return
            self._emit_stream_end()
            self._check_done(now)

    def _emit_stream_end(self) -> None:
        if not self._fin_event_sent:
            self._fin_event_sent = True
            self._events.append(StreamEnded())
