"""Failover between trunks: an outbound request that a trunk fails (408/5xx, silence,
unreachable) before the caller has a final answer goes to the next `--trunk`, built anew for it;
the dialog then stays with the trunk that took it."""

from __future__ import annotations

from dataclasses import replace

from proxy.sip.core import ProxyCore
from tests.proxy.sip.support import (
    BACKUP,
    BACKUP_SOURCE,
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    in_dialog,
    invite,
    response_to,
    sent_to,
    start_line,
    two_trunks,
    value,
    values,
)


def first_attempt(clocked: Clocked) -> bytes:
    (to_trunk,) = sent_to(clocked.receive(invite(), PBX_SOURCE, at=0.0), TRUNK)
    return to_trunk


def test_a_503_sends_the_call_to_the_next_trunk_built_for_it() -> None:
    clocked = two_trunks()
    fwd = first_attempt(clocked)
    out = clocked.receive(response_to(fwd, 503, "Service Unavailable"), TRUNK_SOURCE, at=0.1)
    assert [start_line(d) for d in sent_to(out, TRUNK)] == [
        "ACK sip:00442079460000@127.0.0.1:5060 SIP/2.0"
    ]
    assert sent_to(out, PBX) == []  # the caller never hears of the first trunk's failure
    (retry,) = sent_to(out, BACKUP)
    assert start_line(retry) == start_line(fwd)
    assert value(retry, "From") == '"+3228880001" <sip:+3228880001@127.0.0.2>;tag=pbx-tag-1'
    assert value(retry, "P-Asserted-Identity") == '"+3228880001" <sip:+3228880001@127.0.0.2>'
    (record_route,) = values(retry, "Record-Route")
    assert ";lr;tr=1;cid=" in record_route
    assert values(retry, "Via")[0] != values(fwd, "Via")[0]  # a new client transaction
    assert clocked.core.counters["caller_id_decisions"] == 1  # decided once, for the call


def test_the_dialog_stays_with_the_trunk_that_answered() -> None:
    clocked = two_trunks()
    fwd = first_attempt(clocked)
    out = clocked.receive(response_to(fwd, 503, "Service Unavailable"), TRUNK_SOURCE, at=0.1)
    (retry,) = sent_to(out, BACKUP)
    ok = response_to(retry, 200, "OK")
    (to_pbx,) = sent_to(clocked.receive(ok, BACKUP_SOURCE, at=0.2), PBX)
    assert value(to_pbx, "From") == ORIGINAL_FROM
    (record_route,) = values(to_pbx, "Record-Route")
    bye = in_dialog(
        "BYE",
        uri="sip:callee@127.0.0.2:5090",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye-1;rport",
        from_=ORIGINAL_FROM,
        to=value(to_pbx, "To"),
        route=record_route,
    )
    out = clocked.receive(bye, PBX_SOURCE, at=1.0)
    (forwarded,) = sent_to(out, BACKUP)
    assert sent_to(out, TRUNK) == []
    assert value(forwarded, "From") == value(retry, "From")
    assert values(forwarded, "Route") == []


def test_a_silent_trunk_fails_over_at_timer_b_without_a_408() -> None:
    """With the no-answer timeout off, Timer B is what gives up on a silent trunk."""
    core = two_trunks().core
    clocked = Clocked(ProxyCore(replace(core.config, no_answer_timeout=None), core.policy))
    first_attempt(clocked)
    fired = clocked.advance(32.0)
    assert [o.target for _, o in fired if o.data.startswith(b"SIP/2.0 408")] == []
    retries = [o for _, o in fired if o.target == BACKUP]
    assert [start_line(o.data) for o in retries] == [
        "INVITE sip:00442079460000@127.0.0.1:5060 SIP/2.0"
    ]


def test_an_unreachable_trunk_fails_over_at_once() -> None:
    clocked = two_trunks()
    first_attempt(clocked)
    clocked.core.transport_failed(TRUNK, 0.05)
    out = clocked.core.datagrams_to_send()
    assert [o.target for o in out] == [BACKUP]
    assert clocked.core.counters["failovers"] == 1


def test_a_busy_callee_is_an_answer_not_a_trunk_failure() -> None:
    clocked = two_trunks()
    fwd = first_attempt(clocked)
    out = clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE, at=0.1)
    assert sent_to(out, BACKUP) == []
    assert [start_line(d) for d in sent_to(out, PBX)] == ["SIP/2.0 486 Busy Here"]


def test_when_every_trunk_fails_the_caller_gets_the_last_answer() -> None:
    clocked = two_trunks()
    fwd = first_attempt(clocked)
    out = clocked.receive(response_to(fwd, 503, "Service Unavailable"), TRUNK_SOURCE, at=0.1)
    (retry,) = sent_to(out, BACKUP)
    out = clocked.receive(response_to(retry, 502, "Bad Gateway"), BACKUP_SOURCE, at=0.2)
    assert [start_line(d) for d in sent_to(out, PBX)] == ["SIP/2.0 502 Bad Gateway"]
    assert value(sent_to(out, PBX)[0], "From") == ORIGINAL_FROM


def test_no_failover_after_the_caller_cancelled() -> None:
    clocked = two_trunks()
    fwd = first_attempt(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    cancel = invite().replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(b"1 INVITE", b"1 CANCEL")
    clocked.receive(cancel, PBX_SOURCE, at=0.2)
    out = clocked.receive(response_to(fwd, 503, "Service Unavailable"), TRUNK_SOURCE, at=0.3)
    assert sent_to(out, BACKUP) == []
    assert [start_line(d) for d in sent_to(out, PBX)] == ["SIP/2.0 503 Service Unavailable"]


def test_a_route_naming_an_unknown_trunk_is_refused() -> None:
    clocked = two_trunks()
    bye = in_dialog(
        "BYE",
        uri="sip:callee@127.0.0.1:5080",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye-9;rport",
        from_=ORIGINAL_FROM,
        to="<sip:00442079460000@127.0.0.1>;tag=trunk-1",
        route="<sip:127.0.0.1:5060;lr;tr=7>",
    )
    out = clocked.receive(bye, PBX_SOURCE, at=0.0)
    assert [(start_line(o.data), o.target) for o in out] == [("SIP/2.0 400 Bad Request", PBX)]
