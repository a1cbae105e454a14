"""Log output: plain text or one JSON object per line, on stderr (journald and containers
collect it there). Call fields travel as logging `extra`, e.g.
`log.info("call routed", extra={"event": "invite", "call_id": cid, "trunk": "udp:1.2.3.4:5060"})`.

The per-call audit line (proxy/metrics.py `EventLog`) skips the `logging` machinery when it can:
if the one handler a record from its logger would reach is the `LineHandler` that `configure`
installs, with our formatters and filters only, `LineHandler.write_direct` applies the same
filters to the fields, formats the same text (byte for byte: the formatters' `format_fields`)
and keeps the line in memory; the pending lines are written in one write and flush on the next
loop tick (the server's 50 ms overload check calls `EventLog.flush`), at `MAX_PENDING` lines,
before any other record the handler emits (so the order of lines is kept), on stop and at exit
(`logging.shutdown` flushes every handler). A crash Python survives (an exception) loses none;
a process killed outright (SIGKILL, the OOM killer) loses at most the lines of one tick.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from typing import IO, TYPE_CHECKING, Any

from proxy.log_summary import AuditBudget, SummaryFilter
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
MAX_PENDING = 256  # direct lines kept before a write even between ticks (~70 KB)


def software_version() -> str:
    try:
        return metadata.version("callerid-proxy")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return _present(record.__dict__)


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    """The call fields `values` carry, in FIELDS order, without the None ones."""
    return {name: value for name in FIELDS if (value := values.get(name)) is not None}


# What JSON leaves raw (it escapes only C0 controls, '"' and '\\'), as JSON escapes: C1 controls
# and the line and paragraph separators, which line-splitting readers take for line ends.
_JSON_ESCAPES: dict[int, str] = {
    code: f"\\u{code:04x}" for code in (0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)
}


def _json_line(encoded: str) -> str:
    return encoded if encoded.isascii() else encoded.translate(_JSON_ESCAPES)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._encoder = json.JSONEncoder(ensure_ascii=False, default=str)  # json.dumps' own
        self._second = -1
        self._stamp = ""

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
        return _json_line(self._encoder.encode(data))

    def format_fields(
        self, created: float, levelno: int, name: str, message: str, fields: Mapping[str, Any],
    ) -> str:
        """What `format` writes for a record of these values (no exception), without one."""
        data: dict[str, Any] = {
            "time": self._time(created),
            "level": logging.getLevelName(levelno).lower(),
            "logger": name,
            "message": message,
            **_present(fields),
        }
        return _json_line(self._encoder.encode(data))

    def _time(self, created: float) -> str:
        """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")` with Z,
        its seconds kept from the last call: microseconds rounded half to even as datetime
        does (which may carry into the next second), then cut to milliseconds."""
        second = math.floor(created)
        micro = round((created - second) * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:
            utc = datetime.fromtimestamp(second, UTC).replace(tzinfo=None)
            self._second, self._stamp = second, utc.isoformat(timespec="seconds")
        return f"{self._stamp}.{micro // 1000:03d}Z"


# C0 and C1 controls and DEL, as \xNN: a Call-ID, a user or a display name carrying ESC
# sequences or NULs (the quoted-pairs of RFC 3261 25.1 allow them) must not reach a terminal or
# a log file raw, nor split a line (JSON lines escape them anyway).
_CONTROL_ESCAPES: dict[int, str] = {
    code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
}


def escape_controls(text: str) -> str:
    """`text` with its control characters written as `\\xNN`; `text` itself if it has none."""
    if text.isprintable():
        return text
    return text.translate(_CONTROL_ESCAPES)


class TextFormatter(logging.Formatter):
    """The classic line, then the call fields as key=value; control characters escaped."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        safe = escape_controls(message)
        if safe is message:
            return super().formatMessage(record)
        record.message = safe
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        return line + " " + _key_values(fields)

    def format_fields(
        self, created: float, levelno: int, name: str, message: str, fields: Mapping[str, Any],
    ) -> str:
        """What `format` writes for a record of these values (no exception), without one:
        TEXT_FORMAT spelled out, the local time of `formatTime` kept per second."""
        line = (f"{self._time(created)} {logging.getLevelName(levelno)} {name}: "
                f"{escape_controls(message)}")
        present = _present(fields)
        if not present:
            return line
        return line + " " + _key_values(present)

    def _time(self, created: float) -> str:
        second = int(created)  # what localtime(created) keeps of it
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
        return f"{self._stamp},{int((created - second) * 1000):03d}"  # LogRecord.msecs


def _key_values(fields: dict[str, Any]) -> str:
    return " ".join([f"{name}={escape_controls(str(value))}" for name, value in fields.items()])


class LineHandler(logging.StreamHandler[IO[str]]):
    """The output handler: records as a StreamHandler writes them, and direct lines
    (`write_direct`, no LogRecord) kept until `write_pending`, the next record or a flush."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._pending: deque[str] = deque()  # append/popleft are atomic: no lock to add one

    def write_direct(
        self, name: str, levelno: int, template: str, args: tuple[Any, ...],
        fields: Mapping[str, Any],
    ) -> bool:
        """Log `template % args` with `fields` (a record's `extra`) from logger `name` as this
        handler would, formatted only if the filters let it through. False when its formatter
        or one of its filters is not ours (they need a real record): the caller logs normally."""
        formatter = self.formatter
        if not isinstance(formatter, (TextFormatter, JsonFormatter)):
            return False
        admitted = self._admits(levelno, fields)
        if admitted is None:
            return False
        if admitted:
            line = formatter.format_fields(time.time(), levelno, name, template % args, fields)
            self._pending.append(line)
            if len(self._pending) >= MAX_PENDING:
                self.write_pending()
        return True

    def _admits(self, levelno: int, fields: Mapping[str, Any]) -> bool | None:
        """The filters' verdict from the fields alone, None if one needs a record. An audit
        budget counts the line only once every filter is known to decide without one."""
        budgets: list[AuditBudget] = []
        for found in self.filters:
            if isinstance(found, AuditBudget):
                budgets.append(found)
            elif not (isinstance(found, SummaryFilter) and found.passes_level(levelno)):
                return None
        return all(budget.admits(fields) for budget in budgets)

    def write_pending(self) -> None:
        """Write and flush the pending direct lines (the loop tick, stop)."""
        if not self._pending:
            return
        try:
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(logging.LogRecord(
                self.name or "callerid_proxy", logging.ERROR, __file__, 0,
                "buffered log lines not written", None, None,
            ))  # fmt: skip

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:  # the lines logged before it come before it
            try:
                self._write_lines()
            except RecursionError:
                raise
            except Exception:
                self.handleError(record)
        super().emit(record)

    def flush(self) -> None:
        self.acquire()
        try:
            if self._pending and self.stream:
                self._write_lines()
            super().flush()
        finally:
            self.release()

    def close(self) -> None:
        self.write_pending()
        super().close()

    def _write_lines(self) -> None:
        pending, lines = self._pending, []
        while pending:
            lines.append(pending.popleft())
        lines.append("")
        self.stream.write(self.terminator.join(lines))


def direct_handler(logger: logging.Logger, levelno: int) -> LineHandler | None:
    """The LineHandler a record of `levelno` from `logger` would reach if it is the only
    handler it reaches (Logger.callHandlers' walk) and the logger has no filter; else None."""
    if logger.filters:
        return None
    found: LineHandler | None = None
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            if levelno >= handler.level:
                if found is not None or not isinstance(handler, LineHandler):
                    return None
                found = handler
        if not node.propagate:
            break
        node = node.parent
    return found


def configure(
    level: str, log_format: str, stream: IO[str] | None = None,
    *, audit_budget: int = 0,
) -> None:
    """The root logger writes to `stream` (stderr) at `level`, as text or json; with
    `audit_budget` > 0 at most that many caller-ID audit lines per 10 s, the rest summarized
    (proxy/log_summary.py `AuditBudget`)."""
    handler = LineHandler(stream or sys.stderr)
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
