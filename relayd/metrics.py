"""Prometheus metrics for relayd, off by default, loopback unless told otherwise.

prometheus_client renders the text format (escaping, histogram `_bucket`/`_sum`/`_count`,
`# HELP`/`# TYPE` lines) exactly as Prometheus parses it, and ships the parser our tests use:
that beats hand-written text. Its own HTTP server runs in a thread that would read the session
table while the event loop changes it, so a tiny asyncio HTTP responder serves instead, and the
collector runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from dupsession.core.paths import RTT_BUCKETS
from dupsession.report import SessionReport

log = logging.getLogger("relayd")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 5.0


class SessionCollector(Collector):
    """Turns the exit's session reports (`dupsession.report`) into metric families at scrape
    time."""

    def __init__(
        self, snapshot: Callable[[], list[SessionReport]], rejected: Callable[[], int]
    ) -> None:
        self._snapshot = snapshot
        self._rejected = rejected

    def collect(self) -> Iterator[Any]:
        sessions = self._snapshot()
        yield GaugeMetricFamily(
            "relayd_sessions",
            "Sessions in the table (open, resuming or closed and lingering)",
            value=len(sessions),
        )
        yield CounterMetricFamily(
            "relayd_rejected_frames",
            "Frames dropped unanswered: unknown session, bad tag, garbage",
            value=self._rejected(),
        )
        session_bytes = CounterMetricFamily(
            "relayd_session_bytes",
            "Stream bytes carried",
            labels=["session", "target", "direction"],
        )
        up = GaugeMetricFamily(
            "relayd_path_up", "1 when the path is alive", labels=["session", "path"]
        )
        frames = CounterMetricFamily(
            "relayd_path_frames",
            "DATA copies received, duplicates included (direction up = client to exit)",
            labels=["session", "path", "direction"],
        )
        first = CounterMetricFamily(
            "relayd_path_first",
            "DATA frames this path delivered before any other",
            labels=["session", "path", "direction"],
        )
        loss = GaugeMetricFamily(
            "relayd_path_loss_ratio",
            "Moving-average DATA loss",
            labels=["session", "path", "direction"],
        )
        rtt = HistogramMetricFamily(
            "relayd_path_rtt_seconds", "Round-trip time samples", labels=["session", "path"]
        )
        for report in sessions:
            if report.core is None:  # an exit's sessions always have one
                continue
            sid = report.core.session_id
            target = report.target or ""
            session_bytes.add_metric([sid, target, "up"], report.bytes_in)
            session_bytes.add_metric([sid, target, "down"], report.bytes_out)
            for path in report.core.paths:
                labels = [sid, str(path.id)]
                up.add_metric(labels, 1.0 if path.state == "up" else 0.0)
                inbound, outbound = path.inbound, path.outbound
                frames.add_metric([*labels, "up"], inbound.frames)
                first.add_metric([*labels, "up"], inbound.first)
                first.add_metric([*labels, "down"], outbound.first)
                loss.add_metric([*labels, "up"], inbound.loss)
                loss.add_metric([*labels, "down"], outbound.loss)
                cumulative, buckets = 0, []
                for bound, count in zip(RTT_BUCKETS, path.rtt_buckets, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                rtt.add_metric(labels, buckets, path.rtt_sum)
        yield from (session_bytes, up, frames, first, loss, rtt)


class MetricsServer:
    """GET /metrics over plain HTTP/1.0-style responses; anything else is 404."""

    def __init__(self, host: str, port: int, collector: SessionCollector) -> None:
        self.host, self.port = host, port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            request_line = head[:MAX_REQUEST_HEAD].split(b"\r\n", 1)[0].decode(errors="replace")
            parts = request_line.split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                body = generate_latest(self.registry)
                status = "200 OK"
            else:
                body, status = b"not found\n", "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
