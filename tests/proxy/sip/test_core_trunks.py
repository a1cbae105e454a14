"""Trunk availability (issue 8 item 1): a trunk that does not answer even provisionally within the
no-answer timeout (default 2 s) is failed over at once; the trunk left behind is not retransmitted
to, is CANCELled if it wakes up, and its answers are not the caller's; the failover statuses are
configurable."""

from __future__ import annotations

from dataclasses import replace

from proxy.sip.core import ProxyCore
from proxy.sip.events import FailedOver
from tests.proxy.sip.support import (
    BACKUP,
    BACKUP_SOURCE,
    PBX,
    PBX_SOURCE,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    invite,
    response_to,
    sent_to,
    start_line,
    two_trunks,
)


def configured(*, failover_statuses: frozenset[int]) -> Clocked:
    core = two_trunks().core
    config = replace(core.config, failover_statuses=failover_statuses)
    return Clocked(ProxyCore(config, core.policy))


def test_no_provisional_within_2_s_fails_over_to_the_next_trunk() -> None:
    clocked = two_trunks()
    (first,) = sent_to(clocked.receive(invite(), PBX_SOURCE, at=0.0), TRUNK)
    fired = clocked.advance(1.99)
    assert [(at, o.target) for at, o in fired] == [(0.5, TRUNK), (1.5, TRUNK)]  # Timer A
    fired = clocked.advance(2.0)
    assert [start_line(o.data) for _, o in fired] == [start_line(first)]
    assert fired[0][1].target == BACKUP
    (event,) = [e for e in clocked.core.events_to_handle() if isinstance(e, FailedOver)]
    assert (event.from_hop, event.to_hop, event.cause) == (TRUNK, BACKUP, "no answer")
    later = clocked.advance(40.0)
    assert [o for _, o in later if o.target == TRUNK] == []  # the first trunk is left alone
    assert [o for _, o in later if o.target == PBX and o.data.startswith(b"SIP/2.0 408")]


def test_a_trunk_that_answered_provisionally_is_waited_for() -> None:
    clocked = two_trunks()
    (fwd,) = sent_to(clocked.receive(invite(), PBX_SOURCE, at=0.0), TRUNK)
    clocked.receive(response_to(fwd, 100, "Trying"), TRUNK_SOURCE, at=0.1)
    assert [o for _, o in clocked.advance(20.0) if o.target == BACKUP] == []


def test_the_trunk_left_behind_is_cancelled_when_it_wakes_up_and_not_relayed() -> None:
    clocked = two_trunks()
    (fwd,) = sent_to(clocked.receive(invite(), PBX_SOURCE, at=0.0), TRUNK)
    (retry,) = [o.data for _, o in clocked.advance(2.0) if o.target == BACKUP]
    out = clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=2.5)
    assert [start_line(d).split()[0] for d in sent_to(out, TRUNK)] == ["CANCEL"]
    assert sent_to(out, PBX) == []
    out = clocked.receive(response_to(fwd, 487, "Request Terminated"), TRUNK_SOURCE, at=2.6)
    assert [start_line(d).split()[0] for d in sent_to(out, TRUNK)] == ["ACK"]
    assert sent_to(out, PBX) == []  # not the caller's answer
    (ringing,) = sent_to(clocked.receive(response_to(retry, 180, "Ringing"), BACKUP_SOURCE), PBX)
    assert start_line(ringing) == "SIP/2.0 180 Ringing"


def test_with_a_single_trunk_there_is_no_no_answer_timeout() -> None:
    core = two_trunks().core
    clocked = Clocked(ProxyCore(replace(core.config, extra_trunks=()), core.policy))
    clocked.receive(invite(), PBX_SOURCE, at=0.0)
    fired = clocked.advance(31.0)
    assert [o for _, o in fired if o.target == PBX] == []  # still waiting for Timer B


def test_the_failover_statuses_are_configurable() -> None:
    clocked = configured(failover_statuses=frozenset({486}))
    (fwd,) = sent_to(clocked.receive(invite(), PBX_SOURCE, at=0.0), TRUNK)
    out = clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE, at=0.1)
    assert sent_to(out, PBX) == [] and len(sent_to(out, BACKUP)) == 1
    clocked = configured(failover_statuses=frozenset({486}))
    (fwd,) = sent_to(clocked.receive(invite(), PBX_SOURCE, at=0.0), TRUNK)
    out = clocked.receive(response_to(fwd, 503, "Service Unavailable"), TRUNK_SOURCE, at=0.1)
    assert sent_to(out, BACKUP) == []
    assert [start_line(d) for d in sent_to(out, PBX)] == ["SIP/2.0 503 Service Unavailable"]
