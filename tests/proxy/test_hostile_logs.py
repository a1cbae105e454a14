"""Refusals and drops are logged as one example plus a summary per interval, never per packet."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.log_summary import SummaryFilter
from tests.proxy.hostile_support import ATTACKER, UdpPeer, running_proxy, untrusted_invite

REFUSED = "refused %s from %s:%s with %d: %s"  # the core's template today


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def setup() -> Iterator[tuple[logging.Logger, ListHandler, SummaryFilter, Clock]]:
    logger = logging.getLogger("callerid_proxy.test_hostile_logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = ListHandler()
    logger.addHandler(handler)
    clock = Clock()
    summary = SummaryFilter(10.0, clock=clock)
    summary.attach(handler)
    yield logger, handler, summary, clock
    summary.detach()
    logger.removeHandler(handler)


def test_60000_refusals_produce_a_bounded_number_of_lines(
    setup: tuple[logging.Logger, ListHandler, SummaryFilter, Clock],
) -> None:
    logger, handler, summary, clock = setup
    for index in range(60_000):  # one a millisecond: 60 s of flood
        clock.now = index / 1000
        logger.warning(REFUSED, "INVITE", ATTACKER, 5999 + index % 7, 403, "untrusted source")
        if index % 250 == 0:
            summary.flush()  # the server flushes on its loop tick
    clock.now = 70.0
    summary.flush()
    assert len(handler.lines) <= 14, handler.lines  # 6 windows: an example + a summary each
    examples = [line for line in handler.lines if line.startswith("refused INVITE")]
    summaries = [line for line in handler.lines if " more " in line]
    assert len(examples) == 6
    assert sum(int(line.split()[0]) for line in summaries) == 60_000 - len(examples)
    assert summaries[0] == f"9999 more {REFUSED!r} in the last 10s"


def test_each_reason_keeps_its_own_example(
    setup: tuple[logging.Logger, ListHandler, SummaryFilter, Clock],
) -> None:
    logger, handler, summary, clock = setup
    for _ in range(100):
        logger.warning(REFUSED, "INVITE", ATTACKER, 1, 403, "untrusted")
        logger.warning("dropped: %s", "a response from nowhere")
        logger.warning("refused %s", "x", extra={"reason_key": "scanner"})
        logger.warning("refused %s", "y", extra={"reason_key": "other"})
    assert handler.lines == [
        "refused INVITE from 127.0.0.9:1 with 403: untrusted",
        "dropped: a response from nowhere",
        "refused x",
        "refused y",
    ]
    clock.now = 10.0
    summary.flush()
    assert sorted(handler.lines[4:]) == sorted([
        f"99 more {REFUSED!r} in the last 10s",
        "99 more 'dropped: %s' in the last 10s",
        "99 more 'scanner' in the last 10s",
        "99 more 'other' in the last 10s",
    ])


def test_info_lines_rules_warnings_and_opted_out_records_always_pass(
    setup: tuple[logging.Logger, ListHandler, SummaryFilter, Clock],
) -> None:
    logger, handler, _, _ = setup
    rules_logger = logging.getLogger("callerid_proxy.rules")
    rules_logger.addHandler(handler)
    try:
        for index in range(5):
            logger.info("call-id=%d shown=+3228880001", index)
            logger.warning("tcp accept failed: %s", "x", extra={"summarize": False})
            rules_logger.warning("rules: %s", f"warning {index}")
    finally:
        rules_logger.removeHandler(handler)
    assert len(handler.lines) == 15


def test_a_record_reaching_two_handlers_is_judged_once(
    setup: tuple[logging.Logger, ListHandler, SummaryFilter, Clock],
) -> None:
    logger, handler, summary, clock = setup
    second = ListHandler()
    summary.attach(second)
    logger.addHandler(second)
    try:
        for _ in range(10):
            logger.warning("dropped: %s", "x")
        clock.now = 11.0
        summary.flush()
    finally:
        logger.removeHandler(second)
    assert second.lines == handler.lines == ["dropped: x", "9 more 'dropped: %s' in the last 10s"]


def test_the_live_proxy_logs_a_flood_of_untrusted_invites_in_a_few_lines(tmp_path: Path) -> None:
    count = 3000
    with running_proxy(tmp_path) as proxy:
        attacker = UdpPeer(ATTACKER, (proxy.pbx.proxy[0], proxy.port))
        try:
            before = len(proxy.log_text().splitlines())
            for index in range(count):
                attacker.send(untrusted_invite(index))
                if index % 200 == 199:
                    attacker.drain()
            deadline_counters = proxy.counters()
            for _ in range(200):  # bounded: until the proxy has seen every datagram
                if deadline_counters.get("received", 0) >= count:
                    break
                attacker.drain()
                deadline_counters = proxy.counters()
            proxy.alive()
            lines = proxy.log_text().splitlines()[before:]
        finally:
            attacker.close()
    refused = sum(value for key, value in deadline_counters.items() if key.startswith("refused"))
    dropped = deadline_counters.get("dropped", 0)
    assert refused + dropped >= count * 0.9, deadline_counters  # metrics count every one
    assert len(lines) <= 20, "\n".join(lines[:30])
