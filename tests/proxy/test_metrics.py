"""The glue from core events to logs and Prometheus metrics (proxy/metrics.py)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from proxy.metrics import EventLog, EventMetrics, decision_step
from proxy.sip.addresses import Source, Target
from proxy.sip.events import (
    CallerIdDecided,
    Dropped,
    Event,
    FailedOver,
    Forwarded,
    Refused,
    ResponseRelayed,
    Shed,
    TimedOut,
    TrunkProbed,
    TrunkStateChanged,
)

PBX = Source("udp", "127.0.0.1", 5070)
TRUNK = Target("udp", "127.0.0.1", 5080)
BACKUP = Target("udp", "127.0.0.2", 5090)
DECIDED = CallerIdDecided(
    "c1@pbx", "1002", "00442079460000", "+442071234567", "ACME UK",
    "step 2: advanced rule #1 (destination_prefix '0044', line 17) matches", "95e1625f631d",
    TRUNK, "step 2", False,
)
EVENTS: list[Event] = [
    DECIDED,
    Forwarded("INVITE", TRUNK, "trunk"),
    ResponseRelayed("INVITE", 180, TRUNK, 0.004, True),
    ResponseRelayed("INVITE", 200, TRUNK, 0.3, False),
    Refused(403, "source 127.0.0.9:5060 is neither the PBX nor the trunk", PBX, "INVITE"),
    Dropped("stray 100", PBX, "stray 100 Trying"),
    Shed(PBX, "transactions", 5),
    FailedOver("INVITE", TRUNK, BACKUP, 503, "503"),
    TimedOut("INVITE", BACKUP, "B", 408),
    TrunkProbed(TRUNK, 200),
    TrunkProbed(BACKUP, None),
    TrunkStateChanged(BACKUP, False),
]


def test_the_audit_line_keeps_its_text_and_carries_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="callerid_proxy"):
        EventLog().handle([DECIDED])
    (record,) = caplog.records
    assert record.getMessage() == (
        "call-id=c1@pbx user=1002 destination=00442079460000 shown=+442071234567 "
        "step=step 2 privacy=none "
        "reason=\"step 2: advanced rule #1 (destination_prefix '0044', line 17) matches\" "
        "rules=95e1625f631d"
    )
    fields = {key: getattr(record, key) for key in (
        "event", "call_id", "user", "destination", "shown", "rule", "rules_version", "trunk"
    )}
    assert fields == {
        "event": "caller_id_decided", "call_id": "c1@pbx", "user": "1002",
        "destination": "00442079460000", "shown": "+442071234567", "rule": "2",
        "rules_version": "95e1625f631d", "trunk": "127.0.0.1:5080",
    }


def test_warnings_keep_their_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="callerid_proxy"):
        EventLog().handle(EVENTS[1:])
    assert [r.getMessage() for r in caplog.records] == [
        "refused INVITE from 127.0.0.1:5070 with 403: "
        "source 127.0.0.9:5060 is neither the PBX nor the trunk",
        "dropped: stray 100 Trying",
        "INVITE: 127.0.0.1:5080 failed (503), trying 127.0.0.2:5090",
        "INVITE timer B toward 127.0.0.2:5090: answering 408",
        "trunk 127.0.0.2:5090 is down (keepalives unanswered)",
    ]
    assert [getattr(r, "status", None) for r in caplog.records] == [403, None, 503, 408, None]


def test_nothing_is_formatted_when_the_level_is_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="callerid_proxy"):
        EventLog().handle(EVENTS)
    assert caplog.records == []


def test_hops_that_print_the_same_add_up_to_one_labelled_count() -> None:
    # counted per message by the Target itself; labelled `host:port` at scrape time, where a
    # hop over UDP and over TCP, or by name and by address, is one label: one summed line
    metrics = EventMetrics()
    named = Target("udp", "127.0.0.1", 5080, "trunk.example.com")
    over_tcp = Target("tcp", "127.0.0.1", 5080)
    v6 = Target("udp", "2001:db8::1", 5080)
    for hop in (TRUNK, named, over_tcp, over_tcp, v6):
        metrics.observe(Forwarded("INVITE", hop, "trunk"))
        metrics.observe(ResponseRelayed("INVITE", 183, hop, 0.01, True))
    metrics.observe(ResponseRelayed("BYE", 603, TRUNK, 0.01, True))
    registry = CollectorRegistry()
    registry.register(metrics)
    lines = [
        line for line in generate_latest(registry).decode().splitlines()
        if line.startswith(("callerid_proxy_requests_total", "callerid_proxy_responses_total"))
    ]  # fmt: skip
    assert lines == [
        'callerid_proxy_requests_total{destination="127.0.0.1:5080",method="INVITE",'
        'side="trunk"} 4.0',
        'callerid_proxy_requests_total{destination="[2001:db8::1]:5080",method="INVITE",'
        'side="trunk"} 1.0',
        'callerid_proxy_responses_total{class="6xx",hop="127.0.0.1:5080",method="BYE"} 1.0',
        'callerid_proxy_responses_total{class="1xx",hop="127.0.0.1:5080",method="INVITE"} 4.0',
        'callerid_proxy_responses_total{class="1xx",hop="[2001:db8::1]:5080",method="INVITE"} '
        "1.0",
    ]


def test_metrics_count_each_event_by_its_labels() -> None:
    metrics = EventMetrics()
    for event in EVENTS:
        metrics.observe(event)
    metrics.set_gauge("callerid_proxy_overloaded", "1 while shedding", 1)
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    for line in (
        'callerid_proxy_caller_id_decisions_total{step="2"} 1.0',
        'callerid_proxy_requests_total{destination="127.0.0.1:5080",method="INVITE",'
        'side="trunk"} 1.0',
        'callerid_proxy_responses_total{class="1xx",hop="127.0.0.1:5080",method="INVITE"} 1.0',
        'callerid_proxy_responses_total{class="2xx",hop="127.0.0.1:5080",method="INVITE"} 1.0',
        'callerid_proxy_failovers_total{from="127.0.0.1:5080",to="127.0.0.2:5090"} 1.0',
        'callerid_proxy_dropped_total{reason="stray 100"} 1.0',
        'callerid_proxy_refused_total{status="403"} 1.0',
        'callerid_proxy_shed_total{cause="transactions"} 1.0',
        'callerid_proxy_answered_by_proxy_total{cause="timer B",status="408"} 1.0',
        'callerid_proxy_invite_first_response_seconds_bucket{le="0.005"} 1.0',
        'callerid_proxy_invite_first_response_seconds_bucket{le="0.002"} 0.0',
        'callerid_proxy_invite_final_response_seconds_bucket{le="0.5"} 1.0',
        'callerid_proxy_invite_final_response_seconds_bucket{le="0.2"} 0.0',
        "callerid_proxy_invite_final_response_seconds_count 1.0",
        "callerid_proxy_overloaded 1.0",
        'callerid_proxy_trunk_probes_total{status="200",trunk="127.0.0.1:5080"} 1.0',
        'callerid_proxy_trunk_probes_total{status="none",trunk="127.0.0.2:5090"} 1.0',
        'callerid_proxy_trunk_up{trunk="127.0.0.1:5080"} 1.0',
        'callerid_proxy_trunk_up{trunk="127.0.0.2:5090"} 0.0',
    ):
        assert line in text, line


@pytest.mark.parametrize(
    ("reason", "step"),
    [("step 1: user '1001' has own number", "1"), ("step 4: default", "4"), ("test", "other")],
)
def test_decision_step(reason: str, step: str) -> None:
    assert decision_step(reason) == step


def test_gauges_keep_their_values_unboxed() -> None:
    """Issue 7: a (documentation, value) pair re-made per loop check and kept until the next
    one pins a flood's pymalloc arena; a gauge keeps its first documentation and its value in
    an array, and the scrape shows the last value."""
    metrics = EventMetrics()
    for n in range(100):
        metrics.set_gauge("callerid_proxy_loop_lag_seconds", "Event loop lag", n / 1000)
        metrics.set_gauge("callerid_proxy_dialogs", "Dialogs remembered", n)
    assert not any(isinstance(value, tuple | float) for value in vars(metrics.gauges).values())
    assert metrics.gauges.items() == [
        ("callerid_proxy_dialogs", ("Dialogs remembered", 99.0)),
        ("callerid_proxy_loop_lag_seconds", ("Event loop lag", 0.099)),
    ]
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    assert "callerid_proxy_dialogs 99.0" in text and "callerid_proxy_loop_lag_seconds 0.099" in text

