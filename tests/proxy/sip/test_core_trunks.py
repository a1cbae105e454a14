"""Trunk availability (issue 8 item 1): a trunk that does not answer even provisionally within the
no-answer timeout (default 2 s) is failed over at once; the trunk left behind is not retransmitted
to, is CANCELled if it wakes up, and its answers are not the caller's; the failover statuses are
configurable."""

from __future__ import annotations

from dataclasses import replace

from proxy.sip.addresses import Outgoing, Target
from proxy.sip.core import ProxyCore
from proxy.sip.events import FailedOver, Shed, TrunkStateChanged
from tests.proxy.sip.support import (
    BACKUP,
    BACKUP_SOURCE,
    PBX,
    PBX_SOURCE,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    invite,
    param,
    response_to,
    sent_to,
    start_line,
    two_trunks,
    value,
    values,
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


# ----------------------------------------------------------------- keepalives and selection
def probing(**changes: float | int | bool) -> Clocked:
    core = two_trunks().core
    config = replace(
        core.config,
        probe_interval=float(changes.get("interval", 10.0)),
        probe_failures=int(changes.get("failures", 2)),
        probe_successes=int(changes.get("successes", 1)),
    )
    clocked = Clocked(ProxyCore(config, core.policy))
    clocked.core.start_probes(0.0)
    return clocked


def probes(sent: list[tuple[float, Outgoing]], target: Target) -> list[bytes]:
    return [o.data for _, o in sent if o.target == target and o.data.startswith(b"OPTIONS ")]


def test_keepalives_go_to_every_trunk_each_interval() -> None:
    clocked = probing()
    sent = clocked.advance(0.0)
    (first,) = probes(sent, TRUNK)
    assert start_line(first) == "OPTIONS sip:127.0.0.1:5080 SIP/2.0"
    assert value(first, "Via").startswith("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp")
    assert len(probes(sent, BACKUP)) == 1
    clocked.receive(response_to(first, 200, "OK"), TRUNK_SOURCE, at=0.1)
    assert len(probes(clocked.advance(10.0), TRUNK)) == 1  # the next round, not a retransmission
    states = clocked.core.trunk_status()
    assert states[0] == {"trunk": "127.0.0.1:5080", "up": True, "probes": 1, "last_status": 200}


def kill_first_trunk(clocked: Clocked) -> None:
    """The first trunk never answers its probes; the backup answers every one when it comes
    (within the no-answer timeout, which fails a probe)."""
    start = clocked.now
    for round_at in (start, start + 10.0):
        for at, out in clocked.advance(round_at):
            if out.target == BACKUP and out.data.startswith(b"OPTIONS "):
                clocked.core.receive(response_to(out.data, 200, "OK"), BACKUP_SOURCE, at)
                clocked.core.datagrams_to_send()
    clocked.advance(start + 12.0)  # the no-answer timeout ends the unanswered probes


def test_an_unanswered_probe_fails_at_the_no_answer_timeout_not_timer_f() -> None:
    """Interval 1 s, 2 failures, no-answer 2 s: probes at 0 and 1 fail at 2 and 3, so the silent
    trunk is down at 3 s; the backup, answering, stays up. A late 200 changes nothing."""
    clocked = probing(interval=1.0, failures=2)
    first_round = clocked.advance(0.0)
    for probe in probes(first_round, BACKUP):
        clocked.receive(response_to(probe, 200, "OK"), BACKUP_SOURCE, at=0.1)
    for probe in probes(clocked.advance(1.0), BACKUP):
        clocked.receive(response_to(probe, 200, "OK"), BACKUP_SOURCE, at=1.1)
    clocked.advance(2.99)
    assert [s["up"] for s in clocked.core.trunk_status()] == [True, True]
    clocked.advance(3.0)
    assert [s["up"] for s in clocked.core.trunk_status()] == [False, True]
    assert clocked.core.trunk_status()[0]["probes"] == 2
    (late,) = probes(first_round, TRUNK)
    clocked.receive(response_to(late, 200, "OK"), TRUNK_SOURCE, at=3.1)
    assert clocked.core.trunk_status()[0]["up"] is False


def test_a_trunk_failing_its_probes_is_skipped_by_new_calls() -> None:
    clocked = probing()
    kill_first_trunk(clocked)
    assert [s["up"] for s in clocked.core.trunk_status()] == [False, True]
    changed = [e for e in clocked.core.events_to_handle() if isinstance(e, TrunkStateChanged)]
    assert changed == [TrunkStateChanged(TRUNK, False)]
    out = clocked.receive(invite(), PBX_SOURCE, at=clocked.now)
    assert sent_to(out, TRUNK) == []
    (fwd,) = sent_to(out, BACKUP)
    (record_route,) = values(fwd, "Record-Route")
    assert ";tr=1;" in record_route  # the dialog stays with the backup


def test_a_trunk_answering_again_comes_back_up() -> None:
    clocked = probing()
    kill_first_trunk(clocked)
    pending = set(probes(clocked.advance(clocked.now + 8.0), TRUNK))  # the round at 20 s
    newest = max(pending, key=lambda probe: int(value(probe, "CSeq").split()[0]))
    clocked.receive(response_to(newest, 200, "OK"), TRUNK_SOURCE)
    assert [s["up"] for s in clocked.core.trunk_status()] == [True, True]
    assert TrunkStateChanged(TRUNK, True) in clocked.core.events_to_handle()


def test_with_every_trunk_down_the_pbx_gets_503_at_once() -> None:
    clocked = probing()
    clocked.advance(60.0)  # nobody answers any probe
    assert [s["up"] for s in clocked.core.trunk_status()] == [False, False]
    out = clocked.receive(invite(), PBX_SOURCE)
    assert [(o.target, start_line(o.data)) for o in out] == [
        (PBX, "SIP/2.0 503 Service Unavailable")
    ]
    assert value(out[0].data, "Retry-After") == "5"
    assert clocked.core.server_transaction_count == 0
    shed = [e for e in clocked.core.events_to_handle() if isinstance(e, Shed)]
    assert [e.cause for e in shed] == ["all trunks down"]


def test_round_robin_starts_each_new_call_at_the_next_trunk() -> None:
    core = two_trunks().core
    clocked = Clocked(ProxyCore(replace(core.config, round_robin=True), core.policy))
    first_hops = []
    for n in range(4):
        out = clocked.receive(invite(branch=f"z9hG4bK-rr-{n}", call_id=f"rr-{n}@pbx"), PBX_SOURCE)
        first_hops += [o.target for o in out if o.data.startswith(b"INVITE")]
    assert first_hops == [TRUNK, BACKUP, TRUNK, BACKUP]


def test_a_restarted_proxys_probes_are_new_calls() -> None:
    """Two cores (a proxy and the same proxy restarted) never send the same keepalive: Call-ID,
    From tag and branch differ (RFC 3261 8.1.1.4, 8.1.1.7, 19.3); within one, each round's
    are new too (a retransmission repeats its own, RFC 3261 17.1.2.2)."""
    per_core: list[set[tuple[str, str, str]]] = []
    for _ in range(2):
        clocked = probing(interval=1.0, failures=2)
        sent = probes(clocked.advance(0.0), TRUNK) + probes(clocked.advance(1.0), TRUNK)
        per_core.append({(value(probe, "Call-ID"), param(value(probe, "From"), "tag") or "",
                          param(values(probe, "Via")[0], "branch") or "") for probe in sent})
    for ids in per_core:
        assert len(ids) == 2 and all(len({i[f] for i in ids}) == 2 for f in range(3)), ids
    first, second = per_core
    for field in range(3):
        assert not {i[field] for i in first} & {i[field] for i in second}, per_core
