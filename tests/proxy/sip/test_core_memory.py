"""Memory per call: nothing for the cyclic collector, nothing left once the timers have fired.

Every object a call creates must be freed by reference counting alone (issue 6: reference cycles
per call made full collections stop the loop for a second), and the transaction tables and
timers must be empty once the calls are over (issue 7: memory back after a flood).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Iterator

import pytest

from proxy.sip.core import ProxyCore
from proxy.sip.dialogs import DialogMemory
from proxy.sip.identity import DialogIdentity
from proxy.sip.parse import parse_message
from proxy.sip.responses import build_response
from tests.proxy.sip.support import (
    BACKUP,
    BACKUP_SOURCE,
    ORIGINAL_FROM,
    PBX_SOURCE,
    TRUNK,
    TRUNK_CONTACT,
    TRUNK_SOURCE,
    Clocked,
    in_dialog,
    invite,
    make_core,
    response_to,
    sent_to,
    two_trunks,
    value,
    values,
)

CALLS = 2000
PENDING = 500


def _from_pbx(method: str, n: int, ok: bytes, cseq: int) -> bytes:
    routes = values(ok, "Record-Route")
    return in_dialog(
        method,
        uri=TRUNK_CONTACT,
        via=f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{method.lower()}-{n};rport",
        from_=ORIGINAL_FROM,
        to=value(ok, "To"),
        call_id=f"call-{n}@pbx",
        cseq=cseq,
        route=", ".join(routes) if routes else None,
    )


def answered_call(clocked: Clocked, n: int) -> None:
    """INVITE, 100, 180, 200, ACK, BYE, 200."""
    out = clocked.receive(invite(branch=f"z9hG4bK-inv-{n}", call_id=f"call-{n}@pbx"), PBX_SOURCE)
    (fwd,) = sent_to(out, TRUNK)
    for status, reason in ((100, "Trying"), (180, "Ringing")):
        clocked.receive(response_to(fwd, status, reason), TRUNK_SOURCE)
    ok = response_to(fwd, 200, "OK", extra=f"Contact: <{TRUNK_CONTACT}>")
    (ok_up,) = clocked.receive(ok, TRUNK_SOURCE)
    clocked.receive(_from_pbx("ACK", n, ok_up.data, 1), PBX_SOURCE)
    (bye,) = sent_to(clocked.receive(_from_pbx("BYE", n, ok_up.data, 2), PBX_SOURCE), TRUNK)
    clocked.receive(response_to(bye, 200, "OK"), TRUNK_SOURCE)


def failed_over_call(clocked: Clocked, n: int) -> None:
    """The first trunk says 503 (ACKed by us), the backup says 486 (ACKed, relayed, ACKed)."""
    request = invite(branch=f"z9hG4bK-inv-{n}", call_id=f"call-{n}@pbx")
    (fwd,) = sent_to(clocked.receive(request, PBX_SOURCE), TRUNK)
    (retry,) = sent_to(clocked.receive(response_to(fwd, 503, "Busy Here"), TRUNK_SOURCE), BACKUP)
    busy = clocked.receive(response_to(retry, 486, "Busy Here"), BACKUP_SOURCE)
    assert len(busy) == 2  # our ACK to the backup, the 486 to the PBX
    clocked.receive(
        in_dialog(
            "ACK", uri="sip:00442079460000@127.0.0.1:5060",
            via=f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-{n};rport",
            from_=ORIGINAL_FROM, to=value(busy[1].data, "To"), call_id=f"call-{n}@pbx", cseq=1,
        ),
        PBX_SOURCE,
    )


def cancelled_call(clocked: Clocked, n: int) -> None:
    request = invite(branch=f"z9hG4bK-inv-{n}", call_id=f"call-{n}@pbx")
    (fwd,) = sent_to(clocked.receive(request, PBX_SOURCE), TRUNK)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE)
    cancel = in_dialog(
        "CANCEL", uri="sip:00442079460000@127.0.0.1:5060",
        via=f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-{n};rport",
        from_=ORIGINAL_FROM, to="<sip:00442079460000@127.0.0.1>", call_id=f"call-{n}@pbx",
        cseq=1,
    )
    (cancel_fwd,) = sent_to(clocked.receive(cancel, PBX_SOURCE), TRUNK)
    clocked.receive(response_to(cancel_fwd, 200, "OK"), TRUNK_SOURCE)
    clocked.receive(response_to(fwd, 487, "Request Terminated"), TRUNK_SOURCE)


def unanswered_call(clocked: Clocked, n: int) -> None:
    """Neither trunk ever answers: retransmissions, failover, our 408 (left to the timers)."""
    clocked.receive(invite(branch=f"z9hG4bK-inv-{n}", call_id=f"call-{n}@pbx"), PBX_SOURCE)


SCENARIOS = (answered_call, failed_over_call, cancelled_call, unanswered_call)


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_calls_leave_nothing_for_the_cyclic_collector(no_cyclic_gc: None) -> None:
    clocked = two_trunks()
    for n in range(CALLS):
        SCENARIOS[n % len(SCENARIOS)](clocked, n)
        clocked.advance(clocked.now + 0.01)
    clocked.advance(clocked.now + 3600.0)  # every timer fires: all transactions end
    assert clocked.core.transaction_count == 0
    assert clocked.core.get_timer() is None
    assert clocked.core.counters["failovers"] >= CALLS // 4
    clocked.fired.clear()
    found = gc.collect()
    ours = [obj for obj in gc.garbage if type(obj).__module__.startswith("proxy.")]
    assert ours == [], ours[:5]
    assert found == 0, [type(obj) for obj in gc.garbage[:10]]


def test_an_answered_call_holds_few_tracked_objects_until_timer_l() -> None:
    """Between the 200 OK and Timer L (32 s) a call is a few values, not its parsed messages:
    at 400 calls/s that is ~13,000 calls that every full collection has to walk."""
    clocked = Clocked(two_trunks().core)
    calls = 500

    def answer(n: int) -> None:
        request = invite(branch=f"z9hG4bK-inv-{n}", call_id=f"call-{n}@pbx")
        (fwd,) = sent_to(clocked.receive(request, PBX_SOURCE), TRUNK)
        ok = response_to(fwd, 200, "OK", extra=f"Contact: <{TRUNK_CONTACT}>")
        (ok_up,) = clocked.receive(ok, TRUNK_SOURCE)
        clocked.receive(_from_pbx("ACK", n, ok_up.data, 1), PBX_SOURCE)

    answer(-1)  # first-use allocations out of the count
    gc.collect()
    before = len(gc.get_objects())
    for n in range(calls):
        answer(n)
    gc.collect()
    per_call = (len(gc.get_objects()) - before) / calls
    assert clocked.core.server_transaction_count == calls + 1  # all still in Accepted
    assert per_call < 25, per_call


def test_remembered_dialogs_cost_the_collector_nothing() -> None:
    """A full dialog memory (100,000 by default) is plain tuples the collector stops tracking."""
    memory = DialogMemory(capacity=5000)
    identity = DialogIdentity(b'"A" <sip:1001@pbx>;tag=x', b'"+32" <sip:+32@t>;tag=x')
    memory.remember("warm-up", "tag", identity, 0, 0.0)
    gc.collect()
    before = len(gc.get_objects())
    for n in range(5000):
        memory.remember(f"call-{n}", f"tag-{n}", identity, 1, float(n))
    gc.collect()
    assert len(gc.get_objects()) - before < 10
    recalled = memory.recall("call-7", "tag-7", 10.0)
    assert recalled is not None and (recalled.identity, recalled.trunk_index) == (identity, 1)


def test_shrinking_the_dialog_memory_re_makes_its_entries_in_order() -> None:
    """Issue 7: the dialogs of calls set up during a flood sit in the flood's pymalloc pools,
    one or two blocks per arena; the trim's shrink re-makes each entry (equal, new objects) so
    that the copies sit together and the flood's arenas can be returned."""
    memory = DialogMemory()
    identity = DialogIdentity(b'"A" <sip:1001@pbx>;tag=x', b'"+32" <sip:+32@t>;tag=x')
    for n in range(3):
        memory.remember(f"call-{n}", f"tag-{n}", identity, n, 0.0)
    before = list(memory._entries.items())
    memory.shrink()
    after = list(memory._entries.items())
    assert after == before
    assert all(new[0] is not old[0] and new[1] is not old[1]
               for new, old in zip(after, before, strict=True))
    recalled = memory.recall("call-2", "tag-2", 1.0)
    assert recalled is not None and (recalled.identity, recalled.trunk_index) == (identity, 2)


def test_a_pending_call_on_its_last_trunk_keeps_bytes_not_its_parse() -> None:
    """Issue 7: 20,000 INVITEs toward a silent trunk are 20,000 pending calls. Once the last
    trunk has the request nothing more is built from it: the server transaction keeps only
    what our own answer copies (RFC 3261 8.2.6.2), and that answer is byte-identical."""
    one = Clocked(make_core())
    request = invite(branch="z9hG4bK-inv-1", call_id="call-1@pbx")
    expected = build_response(parse_message(request, datagram=True).wire, 408, "Request Timeout")
    one.receive(request, PBX_SOURCE)
    (server,) = one.core._transactions._servers.values()
    assert server.request is None and server.plan is None and server.answer_base is not None
    one.advance(33.0)  # Timer B: our 408 upstream, built from the kept bytes
    timeouts = [o.data for _, o in one.fired if o.data.startswith(b"SIP/2.0 408")]
    assert timeouts and set(timeouts) == {expected}  # Timer G resends the very same bytes
    two = two_trunks()  # a trunk left to fail over to: the parse is still needed
    two.receive(invite(branch="z9hG4bK-inv-2", call_id="call-2@pbx"), PBX_SOURCE)
    (server,) = two.core._transactions._servers.values()
    assert server.request is not None and server.answer_base is None


def test_a_call_that_never_got_a_2xx_is_not_remembered() -> None:
    """The dialog memory is for dialogs (peers that drop Record-Route); an INVITE answered
    upstream with a non-2xx final, the trunk's or our own 408, leaves nothing in it."""
    clocked = Clocked(make_core())
    busy = invite(branch="z9hG4bK-inv-1", call_id="busy@pbx")
    (fwd,) = sent_to(clocked.receive(busy, PBX_SOURCE), TRUNK)
    assert clocked.core.dialog_count == 1  # remembered while it may still become a dialog
    clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE)
    assert clocked.core.dialog_count == 0
    answered = invite(branch="z9hG4bK-inv-2", call_id="answered@pbx")
    (fwd,) = sent_to(clocked.receive(answered, PBX_SOURCE), TRUNK)
    ok = response_to(fwd, 200, "OK", extra=f"Contact: <{TRUNK_CONTACT}>")
    clocked.receive(ok, TRUNK_SOURCE)
    assert clocked.core.dialog_count == 1  # a dialog: kept
    clocked.receive(invite(branch="z9hG4bK-inv-3", call_id="silent@pbx"), PBX_SOURCE)
    assert clocked.core.dialog_count == 2
    clocked.advance(40.0)  # Timer B: our 408 upstream
    assert clocked.core.dialog_count == 1
    clocked.receive(invite(branch="z9hG4bK-inv-4", call_id="next@pbx"), PBX_SOURCE)
    assert clocked.core.dialog_count == 2  # the answered call and the new one


def _capacity(core: ProxyCore) -> dict[str, int]:
    """Bytes held by the core's long-lived tables, whatever they contain."""
    layer = core._transactions
    tables = {
        "servers": layer._servers, "clients": layer._clients,
        "retired servers": layer._retired_servers, "retired clients": layer._retired_clients,
        "timers": layer._timers._slot_of, "timer slots": layer._timers._count,
        "dialogs": core._dialogs._entries,
    }  # fmt: skip
    return {name: sys.getsizeof(table) for name, table in tables.items()}


def test_the_tables_give_back_a_floods_capacity_when_shrunk() -> None:
    """Issue 7: a dict never shrinks when its items go, so a flood of pending calls left its
    peak tables (about 1.4 MB after 6,000 transactions) once every call had ended. The memory
    trim's `shrink()` returns them to the size of a quiet proxy, in place, keeping live ones."""
    clocked = Clocked(make_core())
    unanswered_call(clocked, -1)
    clocked.advance(clocked.now + 200.0)
    quiet = _capacity(clocked.core)
    for n in range(CALLS):
        unanswered_call(clocked, n)
        clocked.advance(clocked.now + 0.0005)
    clocked.advance(clocked.now + 200.0)
    assert clocked.core.transaction_count == 0
    grown = _capacity(clocked.core)
    assert all(grown[name] > 4 * quiet[name] for name in grown if name != "timer slots"), grown
    live = invite(branch="z9hG4bK-live", call_id="live@pbx")
    clocked.receive(live, PBX_SOURCE)  # one call in progress across the shrink
    servers = dict(clocked.core._transactions._servers)
    tables = (clocked.core._transactions._servers, clocked.core._dialogs._entries)
    clocked.core.shrink()
    shrunk = _capacity(clocked.core)
    assert all(size <= 2 * quiet[name] for name, size in shrunk.items()), (shrunk, quiet)
    layer = clocked.core._transactions  # the same (frozen at start-up) objects, in place
    assert tables[0] is layer._servers and tables[1] is clocked.core._dialogs._entries
    assert clocked.core._transactions._servers == servers and clocked.core.dialog_count == 1
    clocked.advance(clocked.now + 200.0)  # the live call still times out with our 408
    assert any(o.data.startswith(b"SIP/2.0 408") for _, o in clocked.fired)


def test_a_pending_call_toward_a_silent_trunk_is_a_few_small_objects() -> None:
    """Issue 7: a pending INVITE kept the parse of the incoming message for a later CANCEL or
    ACK (33 tracked objects and 9.3 KB per call, measured): over a silent-trunk flood's 3,000
    pending calls, 17 MB of small objects spread over pymalloc arenas that a few long-lived
    objects then kept mapped. It keeps the bytes it sent instead (about 6 and 3.6 KB)."""
    clocked = Clocked(make_core())
    unanswered_call(clocked, -1)  # first-use allocations out of the count
    clocked.core.events_to_handle()
    gc.collect()
    tracked = len(gc.get_objects())
    tracemalloc.start()
    try:
        traced = tracemalloc.get_traced_memory()[0]
        for n in range(PENDING):
            unanswered_call(clocked, n)
            clocked.core.events_to_handle()
        gc.collect()
        per_call = (tracemalloc.get_traced_memory()[0] - traced) / PENDING
    finally:
        tracemalloc.stop()
    assert clocked.core.pending_transaction_count == PENDING + 1
    assert (len(gc.get_objects()) - tracked) / PENDING < 12
    assert per_call < 6000, per_call
