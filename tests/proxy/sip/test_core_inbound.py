"""Inbound calls (from the trunk) reach the PBX with no identity change."""

from __future__ import annotations

from tests.proxy.sip.support import (
    PBX,
    PBX_SOURCE,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    FixedPolicy,
    head_lines,
    header_name,
    in_dialog,
    make_core,
    our_via_removed,
    response_to,
    sent_to,
    start_line,
    value,
    values,
)

CALLER = '"Bob" <sip:+447700900123@trunk.example.com>;tag=tr-1'
CALLED = "<sip:+3228880001@127.0.0.1>"
INBOUND = (
    "INVITE sip:+3228880001@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-in-1\r\n"
    "Max-Forwards: 70\r\n"
    f"From: {CALLER}\r\n"
    f"To: {CALLED}\r\n"
    "Call-ID: in-1@trunk\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:+447700900123@127.0.0.1:5080>\r\n"
    "P-Asserted-Identity: <sip:+447700900123@trunk.example.com>\r\n"
    "Remote-Party-ID: <sip:+447700900123@trunk.example.com>;party=calling\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n\r\nv=0\n"
).encode()


def test_inbound_invite_reaches_the_pbx_with_identity_byte_identical() -> None:
    policy = FixedPolicy()
    clocked = Clocked(make_core(policy))
    out = clocked.receive(INBOUND, TRUNK_SOURCE)
    assert [(o.target, start_line(o.data)) for o in out if o.target == TRUNK] == [
        (TRUNK, "SIP/2.0 100 Trying")
    ]
    (forwarded,) = sent_to(out, PBX)
    assert policy.calls == []
    assert start_line(forwarded) == start_line(INBOUND)
    changed = {"via", "max-forwards", "record-route"}
    assert [line for line in head_lines(forwarded) if header_name(line) not in changed] == [
        line for line in head_lines(INBOUND) if header_name(line) not in changed
    ]
    assert value(forwarded, "From") == CALLER
    assert value(forwarded, "To") == CALLED
    assert forwarded.endswith(b"\r\n\r\nv=0\n")


def test_inbound_invite_is_record_routed_without_a_token_but_with_the_dialogs_mark() -> None:
    """No identity to carry, but a mark: the PBX's requests in this dialog show it went through
    us (proxy/sip/identity.py), so a re-INVITE of it is not taken for an unknown dialog's."""
    clocked = Clocked(make_core())
    (forwarded,) = sent_to(clocked.receive(INBOUND, TRUNK_SOURCE), PBX)
    mark = clocked.core.config.identity_seal.mark("in-1@trunk")
    assert values(forwarded, "Record-Route") == [f"<sip:127.0.0.1:5060;lr;dlg={mark}>"]
    assert value(forwarded, "Max-Forwards") == "69"
    vias = values(forwarded, "Via")
    assert vias[0].startswith("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK")
    assert vias[1] == "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-in-1"


def test_pbx_answer_to_an_inbound_call_goes_back_unchanged_but_for_our_via() -> None:
    clocked = Clocked(make_core())
    (forwarded,) = sent_to(clocked.receive(INBOUND, TRUNK_SOURCE), PBX)
    for status, reason in ((180, "Ringing"), (200, "OK")):
        response = response_to(forwarded, status, reason, to_tag="pbx-in-1")
        out = clocked.receive(response, PBX_SOURCE, at=0.1)
        assert [(o.data, o.target) for o in out] == [(our_via_removed(response), TRUNK)]


def test_bye_in_an_inbound_dialog_passes_without_identity_change() -> None:
    clocked = Clocked(make_core())
    sent_to(clocked.receive(INBOUND, TRUNK_SOURCE), PBX)
    bye = in_dialog(
        "BYE",
        uri="sip:+447700900123@127.0.0.1:5080",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-in-bye",
        from_=CALLED + ";tag=pbx-in-1",
        to=CALLER,
        call_id="in-1@trunk",
        route="<sip:127.0.0.1:5060;lr>",
    )
    (forwarded,) = sent_to(clocked.receive(bye, PBX_SOURCE, at=5.0), TRUNK)
    assert value(forwarded, "From") == CALLED + ";tag=pbx-in-1"
    assert value(forwarded, "To") == CALLER
    assert values(forwarded, "Route") == []
