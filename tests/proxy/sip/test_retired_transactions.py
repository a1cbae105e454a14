"""Finished calls linger ~32 s (Timers D, H, I, J, K, L) as records the cyclic collector does not
track (issue 6: no GC pause over 5 ms at 1,000 calls/s), and still answer retransmissions
exactly as a live transaction would (RFC 3261 17.1.1.2, 17.2.1, 17.2.2; RFC 6026 7.1)."""

from __future__ import annotations

import gc

from proxy.sip.timers import Table, TimerQueue
from proxy.sip.transaction_layer import TransactionLayer
from tests.proxy.sip.support import (
    PBX,
    PBX_SOURCE,
    TRUNK,
    TRUNK_CONTACT,
    TRUNK_SOURCE,
    Clocked,
    forwarded_invite,
    invite,
    make_core,
    response_to,
    sent_to,
    start_line,
    two_trunks,
)
from tests.proxy.sip.test_core_memory import _from_pbx, answered_call, failed_over_call

CALLS = 300


def _layer(clocked: Clocked) -> TransactionLayer:
    return clocked.core._transactions


def _untracked_after_a_young_collection(objects: list[object]) -> list[object]:
    gc.collect(0)
    gc.collect(1)  # a tuple whose item was young at its first look is untracked at the next
    return [obj for obj in objects if gc.is_tracked(obj)]


def test_lingering_transactions_of_finished_calls_are_untracked() -> None:
    """After N answered and N failed-over calls, every record, key and timer entry is atoms."""
    clocked = Clocked(make_core())
    for n in range(CALLS):
        answered_call(clocked, n)
        clocked.advance(clocked.now + 0.01)
    layer = _layer(clocked)
    servers, clients = layer._retired_servers, layer._retired_clients
    assert len(servers) == 2 * CALLS  # INVITE (Accepted, Timer L) and BYE (Completed, Timer J)
    assert len(clients) >= 1  # BYE clients (Completed, Timer K)
    assert layer.pending_server_count == 0 and len(layer._clients) == 0
    lingering: list[object] = [*servers, *servers.values(), *clients, *clients.values()]
    timers = layer._timers
    lingering += list(timers._slot_of)
    for bucket in timers._wheel:
        lingering += [*bucket, *bucket.values()]
    assert len(lingering) > 4 * CALLS
    assert _untracked_after_a_young_collection(lingering) == []
    # The tables themselves stay tracked (frozen at start-up by the live policy).
    assert gc.is_tracked(servers) and gc.is_tracked(timers._slot_of)
    assert all(gc.is_tracked(bucket) for bucket in timers._wheel)


def test_a_finished_call_leaves_no_tracked_object_behind() -> None:
    """Stricter than test_core_memory's budget: nothing of a lingering call stays tracked."""
    clocked = two_trunks()
    answered_call(clocked, -1)  # first-use allocations out of the count
    failed_over_call(clocked, -2)
    clocked.core.events_to_handle()
    gc.collect()
    before = len(gc.get_objects())
    for n in range(CALLS):
        scenario = answered_call if n % 2 else failed_over_call
        scenario(clocked, n)
        clocked.core.events_to_handle()  # as the glue does: events are not the core's memory
    gc.collect()
    assert _layer(clocked).server_count >= CALLS  # still lingering for their timers
    assert (len(gc.get_objects()) - before) / CALLS < 0.2


def test_a_retransmitted_invite_during_the_linger_gets_the_final_again() -> None:
    """INVITE after a 486 (Completed, Timer G/H): the very 486 again, from the record."""
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    (busy,) = sent_to(clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE), PBX)
    gc.collect()
    (record,) = _layer(clocked)._retired_servers.values()
    assert not gc.is_tracked(record) and record[0] == "Completed"
    out = clocked.receive(invite(), PBX_SOURCE, at=0.3)
    assert [(o.data, o.target) for o in out] == [(busy, PBX)]
    timer_g = [o.data for _, o in clocked.advance(0.6)]
    assert timer_g == [busy]  # Timer G resends it from the record too


def test_a_retransmitted_bye_during_the_linger_gets_its_200_again() -> None:
    """BYE after its 200 (Completed, Timer J): the same 200 again; after Timer J, forwarded."""
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK", extra=f"Contact: <{TRUNK_CONTACT}>")
    (ok_up,) = clocked.receive(ok, TRUNK_SOURCE, at=0.1)
    bye = _from_pbx("BYE", 1, ok_up.data, 2)
    (bye_fwd,) = sent_to(clocked.receive(bye, PBX_SOURCE, at=1.0), TRUNK)
    (ok_bye,) = sent_to(clocked.receive(response_to(bye_fwd, 200, "OK"), TRUNK_SOURCE), PBX)
    gc.collect()
    assert all(not gc.is_tracked(r) for r in _layer(clocked)._retired_servers.values())
    for at in (2.0, 20.0):
        out = clocked.receive(bye, PBX_SOURCE, at=at)
        assert [(o.data, o.target) for o in out] == [(ok_bye, PBX)]
    clocked.advance(40.0)  # Timer J (and L) over: the transactions are gone
    assert _layer(clocked).count == 0
    assert sent_to(clocked.receive(bye, PBX_SOURCE), TRUNK) != []  # a new transaction now


def test_a_retransmitted_486_during_the_linger_is_acked_again_from_the_record() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    busy = response_to(fwd, 486, "Busy Here")
    (first_ack,) = sent_to(clocked.receive(busy, TRUNK_SOURCE, at=0.1), TRUNK)
    layer = _layer(clocked)
    assert layer._clients == {} and len(layer._retired_clients) == 1
    for at in (0.3, 20.0):
        out = clocked.receive(busy, TRUNK_SOURCE, at=at)
        assert [(o.data, o.target) for o in out] == [(first_ack, TRUNK)]
    clocked.advance(40.0)  # Timer D over
    assert layer._retired_clients == {}


def test_a_retransmitted_2xx_after_the_linger_began_goes_end_to_end() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK", extra=f"Contact: <{TRUNK_CONTACT}>")
    (first,) = clocked.receive(ok, TRUNK_SOURCE, at=0.1)
    (again,) = clocked.receive(ok, TRUNK_SOURCE, at=0.5)
    assert (again.data, again.target) == (first.data, first.target) == (first.data, PBX)
    assert clocked.receive(invite(), PBX_SOURCE, at=0.6) == []  # Accepted: absorbed silently
    assert start_line(first.data) == "SIP/2.0 200 OK"


def test_timer_entries_and_tables_are_atoms() -> None:
    queue = TimerQueue()
    queue.arm(("z9hG4bK-1", "127.0.0.1:5070", "INVITE"), "L", 32.0)
    gc.collect()
    assert [gc.is_tracked(key) for key in queue._slot_of] == [False]
    (bucket,) = [bucket for bucket in queue._wheel if bucket]
    assert [gc.is_tracked(entry) for entry in (*bucket, *bucket.values())] == [False, False]
    table: Table[tuple[str], tuple[int]] = Table()
    table[("a",)] = (1,)
    plain = {("a",): (1,)}
    gc.collect()
    assert gc.is_tracked(table)  # never untracked: frozen at start-up, it stays out of passes
    assert not gc.is_tracked(plain)  # CPython untracks a plain one, to track it again later
