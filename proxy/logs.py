"""Log output: plain text or one JSON object per line, on stderr (journald and containers
collect it there). Call fields travel as logging `extra`, e.g.
`log.info("call routed", extra={"event": "invite", "call_id": cid, "trunk": "udp:1.2.3.4:5060"})`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import IO, TYPE_CHECKING, Any

from proxy.log_summary import AuditBudget
from proxy.sip.addresses import Target

if TYPE_CHECKING:
    from proxy.server import ServerSettings
    from proxy.sip.policy import ProxyConfig

# The `extra` fields a record may carry, in the order they are written.
FIELDS = (
    "event", "call_id", "user", "destination", "shown", "rule", "rules_version", "trunk", "status",
    "reason", "source",
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def software_version() -> str:
    try:
        return metadata.version("callerid-proxy")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    present = {name: record.__dict__.get(name) for name in FIELDS}
    return {name: value for name, value in present.items() if value is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, then the call fields as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        return line + " " + " ".join(f"{name}={value}" for name, value in fields.items())


def configure(
    level: str, log_format: str, stream: IO[str] | None = None,
    *, audit_budget: int = 0,
) -> None:
    """The root logger writes to `stream` (stderr) at `level`, as text or json; with
    `audit_budget` > 0 at most that many caller-ID audit lines per 10 s, the rest summarized
    (proxy/log_summary.py `AuditBudget`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if audit_budget > 0:
        AuditBudget(audit_budget).attach(handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def start_message(config: ProxyConfig, settings: ServerSettings, rules_version: str) -> str:
    """The one line an operator checks first: every address, the rules and our version."""
    listen = ", ".join(Target("udp", h, p).hostport() for h, p in settings.listen)
    trusted = ", ".join(str(n) for n in config.trusted) or "none beyond the PBX"
    admin = Target("tcp", *settings.admin).hostport() if settings.admin else "off"
    shown = ", ".join(f"{t.transport}:{t.hostport()}" for t in config.advertised)
    return (
        f"callerid-proxy {software_version()} started: listen {listen} (udp, tcp); "
        f"shown as {shown}; pbx {_target(config.pbx)}; "
        f"trunks {', '.join(_target(t) for t in config.trunks)}; trusted {trusted}; "
        f"admin {admin}; rules version {rules_version}"
    )


def _target(target: Target) -> str:
    return f"{target.transport}:{target.hostport()}"
