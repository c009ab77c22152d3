"""Session reports (dupsession/report.py): the control socket's SESSION document, typed.

Built from a real core snapshot, sent as JSON and read back they are equal; a document of
another schema, or one a field of which is missing or of the wrong type, is refused with a
line saying which; the status view, `--json` and the metrics read reports, not dicts.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dupsession import status
from dupsession.report import SCHEMA_VERSION, PathReport, SchemaError, SessionReport
from relayd.metrics import SessionCollector
from tests.support.session import Pair


def client_report() -> SessionReport:
    """A client's report after a real exchange: two opened paths and one that never opened."""
    pair = Pair(paths=2)
    now = pair.connect()
    pair.client.send(b"hello")
    pair.deliver(pair.exit, pair.client.transmit(now), now + 0.05)
    core = dataclasses.replace(pair.client.snapshot(now + 0.05), state="up", age=3.5)
    paths = [
        PathReport(p.id, p.state, p, spec=f"udp://198.18.0.{p.id}:7300", label=f"default/{p.id}")
        for p in core.paths
    ]
    paths.append(PathReport(7, "unreachable", spec="tcp://198.18.0.9:7300", error="refused"))
    return SessionReport(
        role="client",
        state="up",
        age=3.5,
        bytes_out=core.bytes_out,
        bytes_in=core.bytes_in,
        paths=tuple(paths),
        target="127.0.0.1:22",
        core=core,
    )


def over_json(report: SessionReport) -> dict[str, Any]:
    doc = json.loads(json.dumps(report.as_dict()))
    assert isinstance(doc, dict)
    return doc


def test_a_report_survives_json_exactly() -> None:
    report = client_report()
    doc = over_json(report)
    assert doc["schema"] == SCHEMA_VERSION
    assert doc["state"] == "up" and doc["target"] == "127.0.0.1:22" and doc["bytes_out"] == 5
    assert [p["id"] for p in doc["paths"]] == [0, 1, 7]
    assert doc["paths"][2] == {
        "id": 7,
        "state": "unreachable",
        "spec": "tcp://198.18.0.9:7300",
        "label": None,
        "uplink": None,
        "via": None,
        "error": "refused",
    }
    assert SessionReport.from_dict(doc) == report


def test_a_connecting_client_carries_the_schema_too() -> None:
    report = SessionReport("client", "connecting", 0.2, 0, 0, (PathReport(1, "connecting"),))
    doc = over_json(report)
    assert doc["schema"] == SCHEMA_VERSION and "session_id" not in doc
    assert SessionReport.from_dict(doc) == report


def test_unknown_fields_are_ignored() -> None:
    report = client_report()
    doc = over_json(report)
    doc["new_field"] = 1
    doc["paths"][0]["new_path_field"] = [1, 2]
    assert SessionReport.from_dict(doc) == report


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema=2), r"schema 2: this dupsession reads schema 1 only"),
        (lambda d: d.pop("schema"), r"schema None"),
        (lambda d: d.pop("retransmissions"), r"session lacks 'retransmissions'"),
        (lambda d: d.update(bytes_in="5"), r"session.bytes_in is str, not int"),
        (lambda d: d["paths"][0].pop("inbound"), r"path lacks 'inbound'"),
        (lambda d: d["paths"][0]["inbound"].update(loss=None), r"inbound.loss is NoneType"),
        (lambda d: d["paths"][1].update(rtt_recent=3), r"path.rtt_recent is not a list"),
        (lambda d: d.update(paths={}), r"session.paths is not a list"),
    ],
)
def test_documents_it_cannot_read_are_refused_with_the_reason(change: Any, message: str) -> None:
    doc = over_json(client_report())
    change(doc)
    with pytest.raises(SchemaError, match=message):
        SessionReport.from_dict(doc)


def test_status_reads_reports_and_refuses_another_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = client_report()
    good = {"v": 1, "kind": "client", "pid": 42, "sessions": [over_json(report)]}
    assert status.run("client", once=False, as_json=True, collect=lambda: [good]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == [good]  # --json: the documents as sent, read and written back
    assert SessionReport.from_dict(printed[0]["sessions"][0]) == report
    assert status.run("client", once=True, as_json=False, collect=lambda: [good]) == 0
    out = capsys.readouterr().out
    assert "127.0.0.1:22" in out and "udp://198.18.0.1:7300" in out and "unreachable" in out
    newer = json.loads(json.dumps(good))
    newer["sessions"][0]["schema"] = SCHEMA_VERSION + 1
    assert status.run("client", once=True, as_json=False, collect=lambda: [newer]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dupsession status: client pid 42: session document schema 2")


def test_metrics_read_reports() -> None:
    report = client_report()
    exit_view = dataclasses.replace(report, role="exit", paths=report.paths[:2])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(lambda: [exit_view], lambda: 3))
    text = generate_latest(registry).decode()
    assert report.core is not None
    sid = report.core.session_id
    assert "relayd_sessions 1.0" in text and "relayd_rejected_frames_total 3.0" in text
    assert (
        f'relayd_session_bytes_total{{direction="down",session="{sid}",target="127.0.0.1:22"}} 5.0'
        in text
    )
    assert f'relayd_path_up{{path="0",session="{sid}"}} 1.0' in text
