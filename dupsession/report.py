"""One session as the control socket reports it: the core's snapshot plus the endpoint's facts.

The typed form of docs/CONTROL.md's SESSION document, one schema (`SCHEMA_VERSION`, carried as
"schema" in every document, a connecting client's too). Endpoints build a `SessionReport` (the
client's `Client.report()`, relayd's `ExitServer.reports()`); the control socket sends
`as_dict()`, the flat JSON CONTROL.md documents; every reader works on reports: in process as
built (probe, metrics), from a socket through `SessionReport.from_dict` (`dupsession status`,
`relayd status`, `--json`), which refuses a schema it does not know, or a document it cannot
read, with a `SchemaError` that says which.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from dupsession.core.snapshot import SCHEMA_VERSION, PathSnapshot, SessionSnapshot

__all__ = ["SCHEMA_VERSION", "PathReport", "SchemaError", "SessionReport"]


class SchemaError(ValueError):
    """A SESSION document this version cannot read: another schema version, or a field that
    is missing or of the wrong type."""


@dataclass(frozen=True, slots=True)
class PathReport:
    """One path of a session: the core's figures (once it opened) and what the endpoint knows."""

    id: int
    #: "probing", "up", "down"; a client's path that never opened: "connecting", "unreachable"
    state: str
    core: PathSnapshot | None = None  #: None: the path never opened
    spec: str | None = None  #: client: the path URL; exit: "udp from ADDR:PORT" or "tcp path"
    label: str | None = None  #: client: UPLINK/VIA/TRANSPORT
    uplink: str | None = None  #: client: the bind= interface or "default"; exit: "-"
    via: str | None = None  #: client: "direct" or the relay; exit: "-"
    error: str | None = None  #: client: why the path was last lost or could not open

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id} if self.core is None else _path_dict(self.core)
        doc["state"] = self.state
        for name in _PATH_FACTS:
            doc[name] = getattr(self, name)
        return doc

    @classmethod
    def from_dict(cls, doc: object) -> PathReport:
        if not isinstance(doc, dict):
            raise SchemaError("a path is not an object")
        core = _build(PathSnapshot, doc, "path") if "kind" in doc else None
        facts = {name: _value(str | None, doc.get(name), f"path.{name}") for name in _PATH_FACTS}
        return cls(
            id=_value(int, doc.get("id"), "path.id"),
            state=_value(str, doc.get("state"), "path.state"),
            core=core,
            **facts,
        )


_PATH_FACTS = ("spec", "label", "uplink", "via", "error")


@dataclass(frozen=True, slots=True)
class SessionReport:
    """One session as one endpoint sees it. `core` is None while a client is connecting; its
    `state` and `age` are the report's (the control protocol's names: "up", not "open")."""

    role: str  #: "client" or "exit"
    state: str  #: "connecting", "up", "resuming", "closed"
    age: float  #: seconds (client: since the process began connecting)
    bytes_out: int
    bytes_in: int
    paths: tuple[PathReport, ...]
    target: str | None = None  #: HOST:PORT as the client asked for it
    origin: str | None = None  #: client: what opened it (a forward's local peer), if known
    core: SessionSnapshot | None = None

    def as_dict(self) -> dict[str, Any]:
        """The control socket's SESSION document (docs/CONTROL.md)."""
        doc = dataclasses.asdict(self.core) if self.core is not None else {}
        doc.update(
            schema=SCHEMA_VERSION,
            role=self.role,
            state=self.state,
            age=self.age,
            bytes_out=self.bytes_out,
            bytes_in=self.bytes_in,
            target=self.target,
            paths=[path.as_dict() for path in self.paths],
        )
        if self.origin is not None:
            doc["origin"] = self.origin
        return doc

    @classmethod
    def from_dict(cls, doc: object) -> SessionReport:
        """A SESSION document read back; fields this version does not know are ignored."""
        if not isinstance(doc, dict):
            raise SchemaError("a session is not an object")
        schema = doc.get("schema")
        if schema != SCHEMA_VERSION:
            raise SchemaError(
                f"session document schema {schema!r}: this dupsession reads schema "
                f"{SCHEMA_VERSION} only (run the same version on both sides)"
            )
        paths = doc.get("paths")
        if not isinstance(paths, list):
            raise SchemaError("session.paths is not a list")
        reports = tuple(PathReport.from_dict(path) for path in paths)
        core = None
        if "session_id" in doc:
            core_doc = dict(doc, paths=[p for p in paths if "kind" in p])
            core = _build(SessionSnapshot, core_doc, "session")
        return cls(
            role=_value(str, doc.get("role"), "session.role"),
            state=_value(str, doc.get("state"), "session.state"),
            age=_value(float, doc.get("age"), "session.age"),
            bytes_out=_value(int, doc.get("bytes_out"), "session.bytes_out"),
            bytes_in=_value(int, doc.get("bytes_in"), "session.bytes_in"),
            paths=reports,
            target=_value(str | None, doc.get("target"), "session.target"),
            origin=_value(str | None, doc.get("origin"), "session.origin"),
            core=core,
        )


def _path_dict(path: PathSnapshot) -> dict[str, Any]:
    doc = dataclasses.asdict(path)
    doc["rtt_recent"] = list(path.rtt_recent)
    doc["rtt_buckets"] = list(path.rtt_buckets)
    return doc


# -- reading a dataclass back from JSON, checking each field's type ----------------------------


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _build(cls: type[Any], doc: dict[str, Any], where: str) -> Any:
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in doc:
            if field.default is not dataclasses.MISSING:
                continue
            raise SchemaError(f"{where} lacks {field.name!r}")
        kind = _hints(cls)[field.name]
        values[field.name] = _value(kind, doc[field.name], f"{where}.{field.name}")
    return cls(**values)


def _value(kind: Any, value: object, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(kind):
            return None
        (inner,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _value(inner, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise SchemaError(f"{where} is not a list")
        (item, _) = typing.get_args(kind)
        return tuple(_value(item, one, where) for one in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where} is not an object")
        return value
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise SchemaError(f"{where} is not an object")
        return _build(kind, value, where)  # type: ignore[arg-type]
    if kind is float and type(value) in (int, float):
        return float(value)  # type: ignore[arg-type]
    if type(value) is not kind:
        raise SchemaError(f"{where} is {type(value).__name__}, not {kind.__name__}")
    return value
