"""The dialog memory: the fallback when a peer drops our Record-Route."""

from __future__ import annotations

import gc

from hypothesis import given
from hypothesis import strategies as st

from proxy.sip.dialogs import DialogMemory
from proxy.sip.identity import DialogIdentity
from tests.proxy.sip.support import (
    CALLEE,
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    REWRITTEN_FROM,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    forwarded_invite,
    in_dialog,
    make_core,
    response_to,
    sent_to,
    value,
    values,
)

IDENTITY = DialogIdentity(b"original", b"rewritten")


def test_recall_finds_what_was_remembered_and_refreshes_it() -> None:
    memory = DialogMemory(capacity=10, ttl=100.0)
    memory.remember("c1", "tag", IDENTITY, 1, now=0.0)
    found = memory.recall("c1", "tag", now=90.0)
    assert found is not None and (found.identity, found.trunk_index) == (IDENTITY, 1)
    assert memory.recall("c1", "tag", now=180.0) is not None  # refreshed at 90
    assert memory.recall("c1", "other", now=0.0) is None
    assert memory.recall("c1", None, now=0.0) is None


def test_idle_dialogs_expire_and_the_memory_is_bounded() -> None:
    memory = DialogMemory(capacity=3, ttl=10.0)
    memory.remember("old", "t", IDENTITY, 0, now=0.0)
    assert memory.recall("old", "t", now=11.0) is None
    for index in range(5):
        memory.remember(f"c{index}", "t", IDENTITY, 0, now=20.0)
    assert len(memory) == 3
    assert [memory.recall(f"c{i}", "t", now=20.0) is not None for i in range(5)] == [
        False, False, True, True, True,
    ]


def test_a_remembered_dialog_is_two_untracked_objects() -> None:
    """Issue 7: a dialog remembered during a flood outlives it; the fewer blocks it keeps, the
    fewer of the flood's pymalloc pools (and arenas) stay alive. One key, one value, both atoms
    the garbage collector does not track (a tuple of tuples was eight blocks)."""
    memory = DialogMemory(capacity=10, ttl=100.0)
    memory.remember("c1@pbx", "tag-1", IDENTITY, 2, now=0.0)
    memory.recall("c1@pbx", "tag-1", now=5.0)  # a refresh stores a new value the same way
    held = gc.get_referents(memory._entries)
    assert len(held) == 2
    assert {type(obj) for obj in held} == {str, bytes}
    assert not any(gc.is_tracked(obj) for obj in held)


@given(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    st.binary(max_size=300), st.binary(max_size=300), st.integers(0, 64),
)
def test_recall_gives_back_exactly_what_was_remembered(
    call_id: str, tag: str, original: bytes, rewritten: bytes, trunk: int
) -> None:
    memory = DialogMemory(capacity=10, ttl=100.0)
    memory.remember(call_id, tag, DialogIdentity(original, rewritten), trunk, now=1.5)
    found = memory.recall(call_id, tag, now=50.0)
    assert found is not None
    assert (found.identity, found.trunk_index, found.expires) == (
        DialogIdentity(original, rewritten), trunk, 150.0,
    )
    memory.forget(call_id, tag)
    assert len(memory) == 0


def test_a_trunk_that_drops_record_route_still_gets_the_rewritten_identity() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK", extra="Contact: <sip:callee@127.0.0.1:5080>")
    ok = b"".join(line for line in ok.splitlines(keepends=True) if b"Record-Route" not in line)
    (to_pbx,) = sent_to(clocked.receive(ok, TRUNK_SOURCE, at=0.1), PBX)
    assert value(to_pbx, "From") == ORIGINAL_FROM
    bye = in_dialog(
        "BYE", uri="sip:callee@127.0.0.1:5080",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye-nr;rport",
        from_=ORIGINAL_FROM, to=CALLEE,
    )
    (forwarded,) = sent_to(clocked.receive(bye, PBX_SOURCE, at=1.0), TRUNK)
    assert value(forwarded, "From") == REWRITTEN_FROM
    (back,) = sent_to(clocked.receive(response_to(forwarded, 200, "OK"), TRUNK_SOURCE, at=1.1), PBX)
    assert value(back, "From") == ORIGINAL_FROM
    assert clocked.core.counters["dialogs_restored_from_memory"] == 1


def test_a_trunk_request_without_route_reaches_the_pbx_with_to_restored() -> None:
    clocked = Clocked(make_core())
    forwarded_invite(clocked)
    trunk_bye = in_dialog(
        "BYE", uri="sip:1001@127.0.0.1:5070",
        via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-trunk-bye-nr",
        from_=CALLEE, to=REWRITTEN_FROM, cseq=1,
    )
    (to_pbx,) = sent_to(clocked.receive(trunk_bye, TRUNK_SOURCE, at=1.0), PBX)
    assert value(to_pbx, "To") == ORIGINAL_FROM
    assert values(to_pbx, "Route") == []
    ok = response_to(to_pbx, 200, "OK")
    (to_trunk,) = sent_to(clocked.receive(ok, PBX_SOURCE, at=1.1), TRUNK)
    assert value(to_trunk, "To") == REWRITTEN_FROM
