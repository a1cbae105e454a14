"""Rate-limited WARNING and ERROR lines: one full example per reason, then a summary per interval.

A flood (60,000 untrusted INVITEs, a scanner, a broken peer) must not write one line per packet:
the metrics count every one; the log shows the first record of each reason in full, suppresses
the rest for `interval` seconds, then writes "N more <reason> in the last 10s".

The filter sits on the handlers, so it sees every record that reaches them from any
`callerid_proxy.*` logger, including loggers created after it was installed. A reason is the
record's `extra={"reason_key": ...}` if given, else its logger name plus its unformatted message
template (so "refused %s from %s:%s" is one reason whatever the source). `extra={"summarize":
False}` lets a record through always.

The per-call caller-ID audit line (an INFO record with `event="caller_id_decided"`) has its own
budget (`AuditBudget`, `--audit-log-budget`): the first N decisions of each interval are written in
full, the rest are counted, and when the interval ends one line gives their count, the first and
last Call-ID, and how many were decided per rule and shown number, so nothing goes missing
silently; the metrics count every decision. A budget of 0 writes every line.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_INTERVAL = 10.0
PREFIX = "callerid_proxy"
MAX_REASONS = 1024  # windows kept; a reason key is a code template, so this is never reached
EXEMPT = ("callerid_proxy.rules",)  # a rules file's warnings all come at once and all matter
AUDIT_EVENT = "caller_id_decided"  # proxy/metrics.py EventLog's audit line
DEFAULT_AUDIT_BUDGET = 20  # audit lines per interval: 2 new calls a second, ~50 KB a minute
AUDIT_TOP = 5  # (rule, shown) pairs named in an audit summary


@dataclass
class _Window:
    started: float
    logger: str
    label: str
    level: int
    suppressed: int = 0


def _emit(handlers: list[logging.Handler], record: logging.LogRecord) -> None:
    record._callerid_summary = True
    for handler in handlers:
        if record.levelno >= handler.level:
            handler.handle(record)


class SummaryFilter(logging.Filter):
    """Install with `install()`; call `flush()` now and then (the server does, every second) so a
    summary is written when its interval ends even if that reason stops occurring."""

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        exempt: tuple[str, ...] = EXEMPT,
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._exempt = exempt
        self._windows: dict[str, _Window] = {}
        self._handlers: list[logging.Handler] = []
        self._budgets: list[AuditBudget] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_callerid_summary", False) or not self._applies(record):
            return True
        decided = getattr(record, "_callerid_admitted", None)
        if decided is not None:  # the same record reaching a second handler
            return bool(decided)
        decision = self._admit(record)
        record._callerid_admitted = decision
        return decision

    def flush(self) -> None:
        """Write the summary of every reason whose interval ended with records suppressed."""
        now = self._clock()
        for key, window in list(self._windows.items()):
            if now - window.started >= self.interval:
                self._emit_summary(window)
                del self._windows[key]
        for budget in self._budgets:
            budget.flush()

    @staticmethod
    def passes_level(levelno: int) -> bool:
        """Records of this level pass whatever else they carry (proxy/logs.py asks, to write
        a line without a LogRecord)."""
        return not logging.WARNING <= levelno <= logging.ERROR

    def _applies(self, record: logging.LogRecord) -> bool:
        if self.passes_level(record.levelno):
            return False
        if not record.name.startswith(PREFIX):
            return False
        if not getattr(record, "summarize", True):
            return False
        return not any(record.name.startswith(name) for name in self._exempt)

    def _admit(self, record: logging.LogRecord) -> bool:
        key = str(getattr(record, "reason_key", "") or f"{record.name}\x00{record.msg}")
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window.started < self.interval:
            window.suppressed += 1
            return False
        if window is not None:
            self._emit_summary(window)
        elif len(self._windows) >= MAX_REASONS:
            self.flush()
        label = str(getattr(record, "reason_key", "") or record.msg).strip()
        self._windows[key] = _Window(now, record.name, label, record.levelno)
        return True

    def _emit_summary(self, window: _Window) -> None:
        if not window.suppressed:
            return
        record = logging.LogRecord(
            window.logger, window.level, __file__, 0,
            "%d more %r in the last %gs", (window.suppressed, window.label, self.interval), None,
        )  # fmt: skip
        window.suppressed = 0
        _emit(self._handlers, record)

    def attach(self, handler: logging.Handler) -> None:
        handler.addFilter(self)
        self._handlers.append(handler)
        for found in handler.filters:
            if isinstance(found, AuditBudget) and found not in self._budgets:
                self._budgets.append(found)  # flushed with ours, on the server's ticker

    def detach(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self)
        self._handlers.clear()
        self._budgets.clear()


@dataclass
class _AuditWindow:
    started: float
    written: int = 0
    skipped: int = 0
    first_skipped: str = ""
    last_skipped: str = ""
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, shown)


class AuditBudget(logging.Filter):
    """At most `budget` caller-ID audit lines per interval; the rest become one summary line.

    `logs.configure(audit_budget=N)` puts it on the output handler; `install()` finds it there
    and flushes it with the warnings' summaries, so a summary is written when its interval ends
    even if the flood has stopped."""

    def __init__(
        self, budget: int = DEFAULT_AUDIT_BUDGET, interval: float = DEFAULT_INTERVAL,
        *, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.budget = budget
        self.interval = interval
        self._clock = clock
        self._window: _AuditWindow | None = None
        self._handlers: list[logging.Handler] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.budget <= 0 or getattr(record, "event", None) != AUDIT_EVENT:
            return True
        if getattr(record, "_callerid_summary", False):
            return True
        decided = getattr(record, "_callerid_audit", None)
        if decided is not None:  # the same record reaching a second handler
            return bool(decided)
        decision = self._admit(
            getattr(record, "call_id", ""), getattr(record, "rule", "?"),
            getattr(record, "shown", "?"),
        )  # fmt: skip
        record._callerid_audit = decision
        return decision

    def admits(self, fields: Mapping[str, Any]) -> bool:
        """`filter` for a line given as the `extra` fields of its record (proxy/logs.py
        `LineHandler.write_direct`): the same verdict, counted the same way."""
        if self.budget <= 0 or fields.get("event") != AUDIT_EVENT:
            return True
        return self._admit(fields.get("call_id", ""), fields.get("rule", "?"),
                           fields.get("shown", "?"))

    def _admit(self, call_id: object, rule: object, shown: object) -> bool:
        now = self._clock()
        window = self._window
        if window is None or now - window.started >= self.interval:
            self.flush(now)
            window = self._window = _AuditWindow(now)
        if window.written < self.budget:
            window.written += 1
            return True
        call = str(call_id or "")
        if not window.skipped:
            window.first_skipped = call
        window.skipped += 1
        window.last_skipped = call
        window.decisions[(str(rule), str(shown))] += 1
        return False

    def flush(self, now: float | None = None) -> None:
        """Write the summary of an ended interval that skipped lines."""
        window = self._window
        now = self._clock() if now is None else now
        if window is None or now - window.started < self.interval:
            return
        self._window = None
        if window.skipped:
            _emit(self._handlers, self._summary(window))

    def _summary(self, window: _AuditWindow) -> logging.LogRecord:
        top = window.decisions.most_common(AUDIT_TOP)
        shares = ", ".join(f"rule {rule} shown {shown}: {count}" for (rule, shown), count in top)
        others = window.skipped - sum(count for _, count in top)
        if others:
            shares += f", other: {others}"
        record = logging.LogRecord(
            "callerid_proxy.core", logging.INFO, __file__, 0,
            "caller-ID audit: %d more decisions in the last %gs not written one by one (budget "
            "%d per %gs; --audit-log-budget 0 writes all), call-id %s ... %s: %s",
            (window.skipped, self.interval, self.budget, self.interval, window.first_skipped,
             window.last_skipped, shares), None,
        )  # fmt: skip
        record.event = "caller_id_summary"
        return record

    def attach(self, handler: logging.Handler) -> None:
        handler.addFilter(self)
        self._handlers.append(handler)


def install(interval: float = DEFAULT_INTERVAL, *, logger: logging.Logger | None = None) -> (
    SummaryFilter
):
    """Put one filter on every handler of `logger` (default: the root logger, where
    `callerid-proxy run` configures its output) and return it for `flush()`."""
    summary = SummaryFilter(interval)
    for handler in (logger or logging.getLogger()).handlers:
        summary.attach(handler)
    return summary
