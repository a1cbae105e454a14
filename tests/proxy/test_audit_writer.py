"""The audit line without a LogRecord (proxy/logs.py `LineHandler.write_direct`, proxy/metrics.py
`EventLog`): the same bytes as the `logging` path in text and JSON, kept until the loop tick,
the next other record, stop or exit, in order, within the audit budget, never formatted when
the level is off."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import log_summary, logs
from proxy.log_summary import AuditBudget
from proxy.metrics import EventLog
from proxy.server import ServerSettings
from proxy.sip.addresses import Target
from proxy.sip.events import CallerIdDecided
from tests.proxy.example_server import example_server
from tests.proxy.test_hostile_logs import Clock

ROOT = Path(__file__).resolve().parents[2]
TRUNK = Target("udp", "127.0.0.5", 5060)
NOW = 1_764_642_000.1239  # a fixed time.time() for both paths
core_log = logging.getLogger("callerid_proxy.core")


def decided(index: int, reason: str = "step 1: own number") -> CallerIdDecided:
    return CallerIdDecided(
        f"call-{index}@pbx", "1001", "00442079460000", "+3228880001", None, reason, "v1",
        TRUNK, "step 1", index % 2 == 1,
    )  # fmt: skip


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def configured(log_format: str, budget: int = 0, level: str = "info") -> tuple[
    io.StringIO, logs.LineHandler
]:
    """The output as `callerid-proxy run` sets it up: configure, then the warnings' summaries."""
    stream = io.StringIO()
    logs.configure(level, log_format, stream, audit_budget=budget)
    log_summary.install()
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logs.LineHandler)
    return stream, handler


def through_logging(handler: logging.Handler) -> None:
    """A filter of no known kind: the lines take the `logging` path (the reference)."""
    handler.addFilter(lambda record: True)


# ----------------------------------------------------------------- the same bytes
@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("budget", [0, 3])
def test_direct_lines_are_the_bytes_the_logging_path_writes(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, log_format: str, budget: int,
) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    events = [decided(index) for index in range(6)]
    events.append(decided(6, "ünïcode \"quoted\" 'single'\nnewline\ttab \\ back"))
    outputs = []
    for direct in (True, False):
        stream, handler = configured(log_format, budget)
        if not direct:
            through_logging(handler)
        log = EventLog()
        log.handle(events)
        log.flush()
        outputs.append(stream.getvalue())
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == (3 if budget else 7)


def record_at(created: float, message: str) -> logging.LogRecord:
    with mock.patch("time.time", return_value=created):
        return logging.LogRecord("callerid_proxy.core", logging.INFO, __file__, 1, "%s",
                                 (message,), None)  # fmt: skip


VALUES = st.one_of(st.none(), st.text(max_size=12), st.integers(-5, 999))
FIELDS = st.fixed_dictionaries({}, optional={name: VALUES for name in logs.FIELDS})
TIMES = st.floats(min_value=0.0, max_value=4_102_444_800.0)  # 1970 to 2100


@settings(max_examples=400, deadline=None)
@given(created=TIMES, message=st.text(max_size=30), fields=FIELDS)
def test_format_fields_is_format_of_the_record(
    created: float, message: str, fields: dict[str, Any],
) -> None:
    record = record_at(created, message)
    record.__dict__.update(fields)
    for formatter in (logs.TextFormatter(), logs.JsonFormatter()):
        warm = formatter.format_fields(created - 1.0, logging.INFO, "x", "", {})  # a cached second
        assert warm
        direct = formatter.format_fields(created, logging.INFO, record.name, message, fields)
        assert direct == formatter.format(record)


@pytest.mark.parametrize("created", [
    1_764_642_000.9999996,  # datetime rounds to the next second
    1_764_642_000.9995,  # milliseconds cut, not rounded
    1_764_642_000.0,
    1_764_642_000.0000004,
    86_399.9999999,  # the day turns over in the rounding
])  # fmt: skip
def test_the_rounding_edges_of_the_timestamps(created: float) -> None:
    record = record_at(created, "m")
    for formatter in (logs.TextFormatter(), logs.JsonFormatter()):
        formatter.format_fields(int(created), logging.INFO, "x", "", {})  # that second cached
        assert formatter.format_fields(created, logging.INFO, record.name, "m", {}) == (
            formatter.format(record)
        )


# ----------------------------------------------------------------- when lines are written
def test_lines_wait_for_the_tick_and_keep_their_order_around_other_records(
    root_logger: logging.Logger,
) -> None:
    stream, _ = configured("text")
    log = EventLog()
    log.handle([decided(1)])
    assert stream.getvalue() == ""  # kept until the tick
    core_log.warning("refused %s", "something", extra={"event": "refused", "status": 403})
    log.handle([decided(2)])
    logging.getLogger("callerid_proxy.rules").info("rules version %s active", "v2")
    log.handle([decided(3)])
    assert len(stream.getvalue().splitlines()) == 4
    log.flush()
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1].split(" ", 1)[0] for line in lines] == [
        "call-id=call-1@pbx", "refused", "call-id=call-2@pbx", "rules", "call-id=call-3@pbx",
    ]
    log.flush()  # nothing pending: nothing written twice
    assert stream.getvalue().splitlines() == lines


def test_a_burst_is_written_at_max_pending_lines_without_waiting(
    root_logger: logging.Logger,
) -> None:
    stream, _ = configured("text")
    log = EventLog()
    log.handle([decided(index) for index in range(logs.MAX_PENDING + 10)])
    assert len(stream.getvalue().splitlines()) == logs.MAX_PENDING
    log.flush()
    assert len(stream.getvalue().splitlines()) == logs.MAX_PENDING + 10


def test_flushing_or_closing_the_handler_writes_them(root_logger: logging.Logger) -> None:
    stream, handler = configured("json")
    EventLog().handle([decided(1)])
    handler.flush()  # what logging.shutdown does at exit
    assert '"call_id": "call-1@pbx"' in stream.getvalue()
    EventLog().handle([decided(2)])
    handler.close()
    assert '"call_id": "call-2@pbx"' in stream.getvalue()


def test_a_stream_that_fails_is_reported_and_does_not_raise(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str],
) -> None:
    stream, _ = configured("text")
    log = EventLog()
    log.handle([decided(1)])
    stream.close()
    log.flush()
    assert "Logging error" in capsys.readouterr().err


def test_a_python_crash_still_writes_the_pending_lines(tmp_path: Path) -> None:
    script = (
        "from proxy import logs\n"
        "from proxy.metrics import EventLog\n"
        "from proxy.sip.addresses import Target\n"
        "from proxy.sip.events import CallerIdDecided\n"
        "logs.configure('info', 'text')\n"
        "EventLog().handle([CallerIdDecided(f'call-{n}@pbx', '1001', '0044', '+32', None,\n"
        "                   'step 1', 'v1', Target('udp', '127.0.0.5', 5060)) for n in (1, 2)])\n"
        "raise RuntimeError('crash')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 1 and "RuntimeError: crash" in done.stderr
    assert "call-id=call-1@pbx" in done.stderr and "call-id=call-2@pbx" in done.stderr


# ----------------------------------------------------------------- level, budget, fallback
def test_nothing_is_formatted_or_kept_when_info_is_off(root_logger: logging.Logger) -> None:
    stream, handler = configured("text", level="warning")
    with mock.patch.object(logs.TextFormatter, "format_fields") as format_fields:
        EventLog().handle([decided(index) for index in range(10)])
    format_fields.assert_not_called()
    handler.flush()
    assert stream.getvalue() == ""


def test_the_budget_still_applies_and_its_summary_follows_the_lines(
    root_logger: logging.Logger,
) -> None:
    stream, clock = io.StringIO(), Clock()
    handler = logs.LineHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    budget = AuditBudget(3, 10.0, clock=clock)
    budget.attach(handler)
    root_logger.handlers[:] = [handler]
    root_logger.setLevel(logging.INFO)
    log = EventLog()
    with mock.patch.object(logs.TextFormatter, "format_fields",
                           side_effect=logs.TextFormatter.format_fields,
                           autospec=True) as format_fields:  # fmt: skip
        log.handle([decided(index) for index in range(50)])
    assert format_fields.call_count == 3  # the skipped ones are never formatted
    clock.now = 10.0
    budget.flush()
    log.handle([decided(50)])  # a new interval
    log.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5, lines
    assert all("call-id=call-" in line for line in lines[:3])
    assert "caller-ID audit: 47 more decisions" in lines[3] and "call-id=call-50@pbx" in lines[4]


def test_other_handlers_get_a_record_as_before(
    root_logger: logging.Logger, caplog: pytest.LogCaptureFixture,
) -> None:
    stream, _ = configured("text")
    root_logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.INFO)
    log = EventLog()
    log.handle([decided(1)])
    log.flush()
    (record,) = [r for r in caplog.records if r.name == "callerid_proxy.core"]
    assert getattr(record, "call_id", None) == "call-1@pbx"
    assert "call-id=call-1@pbx" in stream.getvalue()  # written by its record, not kept


# ----------------------------------------------------------------- the server's tick and stop
async def _ticks_and_stop(tmp_path: Path, stream: io.StringIO) -> list[int]:
    settings = ServerSettings(listen=(("127.0.0.1", 5060),), pid_file=tmp_path / "p.pid",
                              lag_interval=0.02)  # fmt: skip
    server = example_server(settings)
    server._schedule_lag_check()
    seen = []
    server._event_log.handle([decided(1)])
    seen.append(stream.getvalue().count("call-id="))
    await asyncio.sleep(0.1)  # a few lag checks
    seen.append(stream.getvalue().count("call-id="))
    server._event_log.handle([decided(2)])
    await server.stop()
    seen.append(stream.getvalue().count("call-id="))
    return seen


def test_the_server_writes_them_on_its_loop_tick_and_on_stop(
    root_logger: logging.Logger, tmp_path: Path,
) -> None:
    stream, _ = configured("text")
    server_log = logging.getLogger("callerid_proxy.server")
    server_log.setLevel(logging.WARNING)  # no "shutting down" line to write them first
    try:
        seen = asyncio.run(_ticks_and_stop(tmp_path, stream))
    finally:
        server_log.setLevel(logging.NOTSET)
    assert seen == [0, 1, 2]
