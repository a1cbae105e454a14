"""Rate-limited WARNING and ERROR lines: one full example per reason, then a summary per interval.

A flood (60,000 untrusted INVITEs, a scanner, a broken peer) must not write one line per packet:
the metrics count every one; the log shows the first record of each reason in full, suppresses
the rest for `interval` seconds, then writes "N more <reason> in the last 10s".

The filter sits on the handlers, so it sees every record that reaches them from any
`callerid_proxy.*` logger, including loggers created after it was installed. A reason is the
record's `extra={"reason_key": ...}` if given, else its logger name plus its unformatted message
template (so "refused %s from %s:%s" is one reason whatever the source). `extra={"summarize":
False}` lets a record through always.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INTERVAL = 10.0
PREFIX = "callerid_proxy"
MAX_REASONS = 1024  # windows kept; a reason key is a code template, so this is never reached
EXEMPT = ("callerid_proxy.rules",)  # a rules file's warnings all come at once and all matter


@dataclass
class _Window:
    started: float
    logger: str
    label: str
    level: int
    suppressed: int = 0


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

    def _applies(self, record: logging.LogRecord) -> bool:
        if not logging.WARNING <= record.levelno <= logging.ERROR:
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
        record._callerid_summary = True
        window.suppressed = 0
        for handler in self._handlers:
            if record.levelno >= handler.level:
                handler.handle(record)

    def attach(self, handler: logging.Handler) -> None:
        handler.addFilter(self)
        self._handlers.append(handler)

    def detach(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self)
        self._handlers.clear()


def install(interval: float = DEFAULT_INTERVAL, *, logger: logging.Logger | None = None) -> (
    SummaryFilter
):
    """Put one filter on every handler of `logger` (default: the root logger, where
    `callerid-proxy run` configures its output) and return it for `flush()`."""
    summary = SummaryFilter(interval)
    for handler in (logger or logging.getLogger()).handlers:
        summary.attach(handler)
    return summary
