"""The caller-ID audit line has a budget per interval: a flood of admitted calls writes N lines in
full and one summary with the count, the Call-ID range and the decisions per rule and number;
the metrics still count every decision; a budget of 0 writes every line."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy import log_summary, logs
from proxy.log_summary import AuditBudget
from proxy.metrics import EventLog
from proxy.sip.addresses import Target
from proxy.sip.events import CallerIdDecided
from tests.proxy.hostile_support import PBX_HOST, UdpPeer, running_proxy, wait_for
from tests.proxy.sip.support import invite
from tests.proxy.test_hostile_logs import Clock, ListHandler

TRUNK = Target("udp", "127.0.0.5", 5060)


def decided(index: int, shown: str = "+3228880001", step: str = "step 1") -> CallerIdDecided:
    return CallerIdDecided(
        f"call-{index}@pbx", "1001", "00442079460000", shown, None, f"{step}: own number", "v1",
        TRUNK, step,
    )  # fmt: skip


@pytest.fixture
def audit() -> Iterator[tuple[ListHandler, AuditBudget, Clock]]:
    core = logging.getLogger("callerid_proxy.core")
    handler, clock = ListHandler(), Clock()
    budget = AuditBudget(5, 10.0, clock=clock)
    budget.attach(handler)
    old_level, old_propagate = core.level, core.propagate
    core.addHandler(handler)
    core.setLevel(logging.INFO)
    core.propagate = False
    yield handler, budget, clock
    core.removeHandler(handler)
    core.setLevel(old_level)
    core.propagate = old_propagate


def test_a_flood_of_decisions_writes_the_budget_then_one_summary(
    audit: tuple[ListHandler, AuditBudget, Clock],
) -> None:
    handler, budget, clock = audit
    events = EventLog()
    events.handle([decided(index) for index in range(3000)])
    events.handle([decided(3000 + index, "+3228880002", "step 2") for index in range(10)])
    assert len(handler.lines) == 5
    assert all(line.startswith("call-id=call-") for line in handler.lines)
    clock.now = 10.0
    budget.flush()
    assert len(handler.lines) == 6
    assert handler.lines[5] == (
        "caller-ID audit: 3005 more decisions in the last 10s not written one by one (budget 5 "
        "per 10s; --audit-log-budget 0 writes all), call-id call-5@pbx ... call-3009@pbx: "
        "rule 1 shown +3228880001: 2995, rule 2 shown +3228880002: 10"
    )
    events.handle([decided(4000)])  # a new interval: written in full again
    assert handler.lines[6].startswith("call-id=call-4000@pbx ")


def test_under_the_budget_nothing_is_summarized_and_zero_writes_every_line(
    audit: tuple[ListHandler, AuditBudget, Clock],
) -> None:
    handler, budget, clock = audit
    events = EventLog()
    events.handle([decided(index) for index in range(5)])
    clock.now = 30.0
    budget.flush()
    assert len(handler.lines) == 5
    budget.budget = 0  # --audit-log-budget 0
    events.handle([decided(index) for index in range(500)])
    clock.now = 60.0
    budget.flush()
    assert len(handler.lines) == 505


def test_other_info_lines_and_warnings_are_not_counted(
    audit: tuple[ListHandler, AuditBudget, Clock],
) -> None:
    handler, _, _ = audit
    core = logging.getLogger("callerid_proxy.core")
    for index in range(20):
        core.info("rules version %d active", index)
        core.warning("refused %d", index, extra={"event": "refused"})
    EventLog().handle([decided(index) for index in range(20)])
    assert len(handler.lines) == 40 + 5


def test_configure_puts_the_budget_on_the_handler_and_install_flushes_it() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    old_handlers, old_level = list(root.handlers), root.level
    try:
        logs.configure("info", "text", stream, audit_budget=3)
        summary = log_summary.install(interval=0.05)
        EventLog().handle([decided(index) for index in range(50)])
        time.sleep(10.1)  # the audit interval is the default 10 s
        summary.flush()
        summary.detach()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in old_handlers:
            root.addHandler(handler)
        root.setLevel(old_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert "caller-ID audit: 47 more decisions" in lines[3]
    assert "event=caller_id_summary" in lines[3]


def test_the_live_proxy_keeps_its_audit_log_within_the_budget(tmp_path: Path) -> None:
    count = 200
    with running_proxy(tmp_path, ["--audit-log-budget", "7"]) as proxy:
        pbx = UdpPeer(PBX_HOST, (PBX_HOST, proxy.port))
        try:
            for index in range(count):
                request = invite(call_id=f"audit-{index}@pbx", branch=f"z9hG4bK-audit-{index}")
                pbx.send(request.replace(b"127.0.0.1:5070;branch",
                                         f"{PBX_HOST}:{pbx.port};branch".encode(), 1))
                if index % 50 == 49:
                    pbx.drain()
            wait_for(lambda: proxy.counters().get("forwarded", 0) >= count, "every INVITE")
            proxy.trunk.drain()
            wait_for(lambda: "caller-ID audit:" in proxy.log_text(), "the audit summary", 15.0)
            text = proxy.log_text()
        finally:
            pbx.close()
    audit_lines = [line for line in text.splitlines() if "call-id=audit-" in line]
    summaries = [line for line in text.splitlines() if "caller-ID audit:" in line]
    assert len(audit_lines) == 7, audit_lines
    assert len(summaries) == 1 and f"{count - 7} more decisions" in summaries[0], summaries
