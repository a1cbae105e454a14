"""A request from the PBX that claims a dialog (a To tag) is taken as in one only when the
dialog went through us: our Route carries its identity token, or, for a dialog with no identity
(an inbound call), its mark; or we remember it. An INVITE claiming any other dialog gets its
caller ID decided as a new call's: a made-up To tag used to send the PBX's own From and
P-Asserted-Identity to the trunk, around the rules. And in a dialog whose caller ID we set,
what the PBX asserts again (P-Asserted-Identity, P-Preferred-Identity, a calling
Remote-Party-ID) never reaches the trunk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.sip.errors import BadRequest
from proxy.sip.events import CallerIdDecided
from proxy.sip.identity import IdentitySeal
from tests.proxy.sip.support import (
    PBX,
    PBX_SOURCE,
    REWRITTEN_FROM,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    FixedPolicy,
    forwarded_invite,
    in_dialog,
    invite,
    make_core,
    sent_to,
    start_line,
    value,
    values,
)
from tests.proxy.sip.test_core_dialog import established, from_pbx
from tests.proxy.sip.test_core_inbound import CALLED, CALLER, INBOUND

FORGED_PAI = "P-Asserted-Identity: <sip:+19005551234@127.0.0.1>\r\n"


def made_up_dialog(route: str = "") -> bytes:
    """An INVITE from the PBX with a To tag no dialog of ours has, and its own caller ID."""
    request = invite(call_id="made-up@pbx", extra=FORGED_PAI)
    request = request.replace(b"To: <sip:00442079460000@127.0.0.1>",
                              b"To: <sip:00442079460000@127.0.0.1>;tag=anything")
    if route:
        request = request.replace(b"Max-Forwards:", f"Route: {route}\r\nMax-Forwards:".encode())
    return request


@pytest.mark.parametrize("route", ["", "<sip:127.0.0.1:5060;lr>"],
                         ids=["no-route", "our-route-without-token-or-mark"])
def test_an_invite_claiming_an_unknown_dialog_gets_its_caller_id_decided(route: str) -> None:
    policy = FixedPolicy()
    clocked = Clocked(make_core(policy))
    out = clocked.receive(made_up_dialog(route), PBX_SOURCE)
    (forwarded,) = sent_to(out, TRUNK)
    assert policy.calls == [("1001", "00442079460000")]
    assert value(forwarded, "From") == REWRITTEN_FROM
    assert values(forwarded, "P-Asserted-Identity") == ['"+3228880001" <sip:+3228880001@127.0.0.1>']
    assert values(forwarded, "P-Preferred-Identity") == []
    assert values(forwarded, "Route") == []
    assert ";cid=" in values(forwarded, "Record-Route")[0]  # a dialog of ours from now on
    decided = [e for e in clocked.core.events_to_handle() if isinstance(e, CallerIdDecided)]
    assert [e.call_id for e in decided] == ["made-up@pbx"]
    assert clocked.core.counters["invites_of_unknown_dialogs"] == 1


def test_a_forged_mark_is_refused() -> None:
    clocked = Clocked(make_core())
    mark = clocked.core.config.identity_seal.mark("another-call@pbx")  # a real one, not its own
    out = clocked.receive(made_up_dialog(f"<sip:127.0.0.1:5060;lr;dlg={mark}>"), PBX_SOURCE)
    assert [(o.target, start_line(o.data)) for o in out] == [(PBX, "SIP/2.0 400 Bad Request")]


def test_a_reinvite_in_an_inbound_dialog_goes_on_untouched() -> None:
    """The inbound call's Record-Route carried its mark: the PBX's re-INVITE (hold) is in a
    dialog that went through us, and an inbound call's identity is never changed."""
    policy = FixedPolicy()
    clocked = Clocked(make_core(policy))
    (to_pbx,) = sent_to(clocked.receive(INBOUND, TRUNK_SOURCE), PBX)
    (record_route,) = values(to_pbx, "Record-Route")
    reinvite = in_dialog(
        "INVITE", uri="sip:+447700900123@127.0.0.1:5080",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-in-hold", from_=CALLED + ";tag=pbx-in-1",
        to=CALLER, call_id="in-1@trunk", route=record_route,
    )
    (forwarded,) = sent_to(clocked.receive(reinvite, PBX_SOURCE, at=5.0), TRUNK)
    assert value(forwarded, "From") == CALLED + ";tag=pbx-in-1"
    assert values(forwarded, "P-Asserted-Identity") == []
    assert policy.calls == []
    assert clocked.core.counters["invites_of_unknown_dialogs"] == 0


def test_what_the_pbx_asserts_again_in_a_dialog_we_rewrote_never_reaches_the_trunk() -> None:
    call = established()
    extra = (FORGED_PAI + "P-Preferred-Identity: <sip:1001@pbx.example.com>\r\n"
             "Remote-Party-ID: <sip:+19005551234@127.0.0.1>;party=calling;screen=no\r\n"
             "Remote-Party-ID: <sip:00442079460000@127.0.0.1>;party=called\r\n")
    request = from_pbx("INVITE", call.record_route, cseq=3).replace(
        b"Content-Length:", extra.encode() + b"Content-Length:")
    (forwarded,) = sent_to(call.clocked.receive(request, PBX_SOURCE, at=1.0), TRUNK)
    assert value(forwarded, "From") == REWRITTEN_FROM
    assert values(forwarded, "P-Asserted-Identity") == []
    assert values(forwarded, "P-Preferred-Identity") == []
    assert values(forwarded, "Remote-Party-ID") == ["<sip:00442079460000@127.0.0.1>;party=called"]
    assert call.policy.calls == [("1001", "00442079460000")]  # no new decision in the dialog


def test_an_unknown_dialogs_other_requests_still_pass() -> None:
    """Only an INVITE can show a callee a caller ID: a BYE or an ACK of a dialog we never saw
    goes on as before (the trunk answers 481 for a dialog it does not know either)."""
    clocked = Clocked(make_core())
    forwarded_invite(clocked)
    for method in ("BYE", "ACK"):
        request = in_dialog(
            method, uri="sip:callee@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070;branch="
            f"z9hG4bK-unknown-{method}", from_='"A" <sip:1001@pbx.example.com>;tag=x',
            to="<sip:b@127.0.0.1>;tag=y", call_id="never-seen@pbx",
        )
        (forwarded,) = sent_to(clocked.receive(request, PBX_SOURCE, at=1.0), TRUNK)
        assert start_line(forwarded).startswith(method)
    assert clocked.core.counters["invites_of_unknown_dialogs"] == 0


@given(st.text(min_size=1, max_size=80).map(lambda s: s.encode("utf-8").decode("latin-1")),
       st.text(min_size=1, max_size=80).map(lambda s: s.encode("utf-8").decode("latin-1")))
def test_a_mark_is_its_own_dialogs_only(call_id: str, other: str) -> None:
    seal = IdentitySeal(b"secret")
    mark = seal.mark(call_id)
    assert len(mark) == 16 and mark.isascii()
    seal.check_mark(call_id, mark)
    if other != call_id:
        with pytest.raises(BadRequest):
            seal.check_mark(other, mark)
    with pytest.raises(BadRequest):
        IdentitySeal(b"another secret").check_mark(call_id, mark)
    flipped = ("B" if mark[0] == "A" else "A") + mark[1:]
    with pytest.raises(BadRequest):
        seal.check_mark(call_id, flipped)
