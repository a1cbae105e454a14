"""In-dialog requests: identity rewritten again toward the trunk, restored toward the PBX, from the
signed Record-Route token only (restart-proof), and refused with 400 when the token is not ours."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from proxy.sip.core import ProxyCore
from proxy.sip.policy import ProxyConfig
from tests.proxy.sip.support import (
    CALLEE,
    ORIGINAL_FROM,
    PBX,
    PBX_CONTACT,
    PBX_SOURCE,
    PROXY,
    REWRITTEN_FROM,
    TRUNK,
    TRUNK_CONTACT,
    TRUNK_SOURCE,
    Clocked,
    FixedPolicy,
    forwarded_invite,
    head_lines,
    header_name,
    in_dialog,
    invite,
    make_core,
    our_via_removed,
    response_to,
    sent_to,
    start_line,
    value,
    values,
    with_header_replaced,
)

BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass
class Call:
    clocked: Clocked
    policy: FixedPolicy
    invite: bytes  # as the trunk got it
    ok: bytes  # the trunk's 200
    record_route: str  # our Record-Route value, as the 200 carries it

    @property
    def token(self) -> str:
        return self.record_route.split(";cid=", 1)[1].rstrip(">")


def established(call_id: str = "call-1@pbx") -> Call:
    policy = FixedPolicy()
    clocked = Clocked(make_core(policy))
    fwd = forwarded_invite(clocked, invite(call_id=call_id))
    ok = response_to(fwd, 200, "OK", extra=f"Contact: <{TRUNK_CONTACT}>")
    (to_pbx,) = sent_to(clocked.receive(ok, TRUNK_SOURCE, at=0.1), PBX)
    assert value(to_pbx, "From") == ORIGINAL_FROM
    (record_route,) = values(to_pbx, "Record-Route")
    return Call(clocked, policy, fwd, ok, record_route)


def from_pbx(method: str, route: str, *, cseq: int = 2, call_id: str = "call-1@pbx",
             branch: str | None = None) -> bytes:
    return in_dialog(
        method,
        uri=TRUNK_CONTACT,
        via=f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch or 'z9hG4bK-pbx-' + method.lower()};rport",
        from_=ORIGINAL_FROM,
        to=CALLEE,
        call_id=call_id,
        cseq=cseq,
        route=route,
    )


def from_trunk(method: str, route: str, *, to: str = REWRITTEN_FROM, cseq: int = 1) -> bytes:
    return in_dialog(
        method,
        uri=PBX_CONTACT,
        via=f"SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-trunk-{method.lower()}",
        from_=CALLEE,
        to=to,
        cseq=cseq,
        route=route,
    )


def assert_forwarded_to_trunk(request: bytes, forwarded: bytes) -> None:
    """From rewritten again, our Route gone, Max-Forwards - 1, our Via on top; rest identical."""
    assert start_line(forwarded) == start_line(request)
    assert value(forwarded, "From") == REWRITTEN_FROM
    assert values(forwarded, "Route") == []
    assert value(forwarded, "Max-Forwards") == "69"
    vias = values(forwarded, "Via")
    assert vias[0].startswith("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK")
    assert vias[1].startswith(values(request, "Via")[0])
    changed = {"from", "route", "max-forwards", "via"}
    assert [line for line in head_lines(forwarded) if header_name(line) not in changed] == [
        line for line in head_lines(request) if header_name(line) not in changed
    ]


# ----------------------------------------------------------------- from the PBX
def test_ack_for_the_2xx_goes_to_the_trunk_end_to_end_with_from_rewritten() -> None:
    call = established()
    ack = from_pbx("ACK", call.record_route, cseq=1)
    out = call.clocked.receive(ack, PBX_SOURCE, at=0.2)
    (forwarded,) = sent_to(out, TRUNK)
    assert len(out) == 1
    assert_forwarded_to_trunk(ack, forwarded)
    assert value(forwarded, "From") == value(call.invite, "From")


def test_bye_from_the_pbx_goes_to_the_trunk_and_its_200_returns_with_the_original_from() -> None:
    call = established()
    call.clocked.receive(from_pbx("ACK", call.record_route, cseq=1), PBX_SOURCE, at=0.2)
    bye = from_pbx("BYE", call.record_route)
    (forwarded,) = sent_to(call.clocked.receive(bye, PBX_SOURCE, at=5.0), TRUNK)
    assert_forwarded_to_trunk(bye, forwarded)
    ok = response_to(forwarded, 200, "OK")
    out = call.clocked.receive(ok, TRUNK_SOURCE, at=5.1)
    expected = our_via_removed(with_header_replaced(ok, "from", "From: " + ORIGINAL_FROM))
    assert [(o.data, o.target) for o in out] == [(expected, PBX)]
    assert call.policy.calls == [("1001", "00442079460000")]  # no new decision in the dialog


@pytest.mark.parametrize("method", ["INVITE", "UPDATE", "INFO", "REFER"])
def test_other_in_dialog_requests_from_the_pbx_are_rewritten_too(method: str) -> None:
    call = established()
    request = from_pbx(method, call.record_route, cseq=3)
    (forwarded,) = sent_to(call.clocked.receive(request, PBX_SOURCE, at=1.0), TRUNK)
    assert_forwarded_to_trunk(request, forwarded)
    assert values(forwarded, "Record-Route") == []  # the route set is fixed by the INVITE
    response = response_to(forwarded, 200, "OK")
    (to_pbx,) = sent_to(call.clocked.receive(response, TRUNK_SOURCE, at=1.1), PBX)
    assert value(to_pbx, "From") == ORIGINAL_FROM
    assert call.policy.calls == [("1001", "00442079460000")]


def test_only_our_route_entry_is_removed_when_others_follow() -> None:
    call = established()
    route = f"{call.record_route}, <sip:sbc.trunk.example.com;lr>"
    bye = from_pbx("BYE", route)
    (forwarded,) = sent_to(call.clocked.receive(bye, PBX_SOURCE, at=1.0), TRUNK)
    assert values(forwarded, "Route") == ["<sip:sbc.trunk.example.com;lr>"]
    assert value(forwarded, "From") == REWRITTEN_FROM


# ----------------------------------------------------------------- from the trunk
def test_bye_from_the_trunk_reaches_the_pbx_with_to_restored() -> None:
    call = established()
    bye = from_trunk("BYE", call.record_route)
    out = call.clocked.receive(bye, TRUNK_SOURCE, at=3.0)
    (forwarded,) = sent_to(out, PBX)
    assert len(out) == 1
    assert start_line(forwarded) == f"BYE {PBX_CONTACT} SIP/2.0"
    assert value(forwarded, "To") == ORIGINAL_FROM
    assert value(forwarded, "From") == CALLEE
    assert values(forwarded, "Route") == []
    assert value(forwarded, "Max-Forwards") == "69"
    assert values(forwarded, "Via")[1] == values(bye, "Via")[0]


def test_the_pbx_200_to_the_trunk_bye_goes_back_with_the_rewritten_to() -> None:
    call = established()
    bye = from_trunk("BYE", call.record_route)
    (forwarded,) = sent_to(call.clocked.receive(bye, TRUNK_SOURCE, at=3.0), PBX)
    ok = response_to(forwarded, 200, "OK")
    assert value(ok, "To") == ORIGINAL_FROM
    out = call.clocked.receive(ok, PBX_SOURCE, at=3.1)
    expected = our_via_removed(with_header_replaced(ok, "to", "To: " + REWRITTEN_FROM))
    assert [(o.data, o.target) for o in out] == [(expected, TRUNK)]


def test_trunk_in_dialog_request_with_an_unrelated_to_is_not_rewritten_blindly() -> None:
    """The token, not the message, says what To to give back: the PBX always sees its own."""
    call = established()
    bye = from_trunk("BYE", call.record_route, to="<sip:someone@else>;tag=pbx-tag-1")
    (forwarded,) = sent_to(call.clocked.receive(bye, TRUNK_SOURCE, at=3.0), PBX)
    assert value(forwarded, "To") == ORIGINAL_FROM


# ----------------------------------------------------------------- restart and secrets
def test_a_restarted_proxy_with_the_same_secret_handles_the_bye_identically() -> None:
    call = established()
    bye = from_pbx("BYE", call.record_route)
    (first,) = sent_to(call.clocked.receive(bye, PBX_SOURCE, at=5.0), TRUNK)
    restarted = Clocked(make_core())
    (second,) = sent_to(restarted.receive(bye, PBX_SOURCE, at=5.0), TRUNK)
    assert second == first
    ok = response_to(second, 200, "OK")
    out = restarted.receive(ok, TRUNK_SOURCE, at=5.1)
    assert [value(o.data, "From") for o in out] == [ORIGINAL_FROM]


def test_a_restarted_proxy_restores_to_on_a_trunk_bye() -> None:
    call = established()
    restarted = Clocked(make_core())
    (forwarded,) = sent_to(
        restarted.receive(from_trunk("BYE", call.record_route), TRUNK_SOURCE, at=9.0), PBX
    )
    assert value(forwarded, "To") == ORIGINAL_FROM


@pytest.mark.parametrize("side", ["pbx", "trunk"])
def test_a_proxy_with_another_secret_answers_400_and_forwards_nothing(side: str) -> None:
    call = established()
    config = call.clocked.core.config
    other = ProxyConfig(
        advertised=config.advertised, pbx=config.pbx, trunk=config.trunk, secret=b"other-secret"
    )
    stranger = Clocked(ProxyCore(other, FixedPolicy()))
    if side == "pbx":
        request, source = from_pbx("BYE", call.record_route), PBX_SOURCE
    else:
        request, source = from_trunk("BYE", call.record_route), TRUNK_SOURCE
    out = stranger.receive(request, source, at=1.0)
    assert [(o.target, start_line(o.data)) for o in out] == [
        (source.reply_target(), "SIP/2.0 400 Bad Request")
    ]


# ----------------------------------------------------------------- tampering
def tampered_at(token: str, index: int) -> str:
    if token[index] == ".":
        return token[:index] + "A" + token[index + 1 :]
    replacement = BASE64URL[(BASE64URL.index(token[index]) + 1) % 64]
    return token[:index] + replacement + token[index + 1 :]


def assert_refused(clocked: Clocked, request: bytes, source_is_pbx: bool = True) -> None:
    source = PBX_SOURCE if source_is_pbx else TRUNK_SOURCE
    out = clocked.receive(request, source, at=clocked.now + 0.1)
    assert [(o.target, start_line(o.data)) for o in out] == [
        (source.reply_target(), "SIP/2.0 400 Bad Request")
    ], f"{request!r} was not refused"


def test_every_one_character_change_of_the_token_is_refused() -> None:
    call = established()
    token = call.token
    for index in range(len(token)):
        route = call.record_route.replace(token, tampered_at(token, index))
        assert_refused(call.clocked, from_pbx("BYE", route, branch=f"z9hG4bK-t{index}"))
    assert sent_to([o for _, o in call.clocked.fired], TRUNK) == []


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "A",
        lambda t: t[:-1],
        lambda t: t.replace(".", ""),
        lambda t: t[:10] + "!" + t[10:],
        lambda t: t[:10] + "%41" + t[11:],
        lambda t: "",
        lambda t: "garbage",
        lambda t: t.split(".")[0] + "." + t.split(".")[0],
    ],
    ids=["appended", "truncated", "no-dot", "foreign-char", "escaped", "empty", "garbage",
         "body-as-mac"],
)
def test_malformed_tokens_are_refused(mangle: Callable[[str], str]) -> None:
    call = established()
    route = call.record_route.replace(call.token, mangle(call.token))
    assert_refused(call.clocked, from_pbx("BYE", route))


def test_the_token_of_another_call_id_is_refused() -> None:
    first, second = established("call-1@pbx"), established("call-2@pbx")
    assert first.token != second.token
    clocked = first.clocked
    assert_refused(clocked, from_pbx("BYE", second.record_route, call_id="call-1@pbx"))
    assert_refused(clocked, from_pbx("BYE", first.record_route, call_id="call-2@pbx"))


def test_a_tampered_token_from_the_trunk_side_is_refused() -> None:
    call = established()
    route = call.record_route.replace(call.token, tampered_at(call.token, 5))
    assert_refused(call.clocked, from_trunk("BYE", route), source_is_pbx=False)


def test_a_tampered_ack_is_dropped_not_answered_nor_forwarded() -> None:
    call = established()
    route = call.record_route.replace(call.token, tampered_at(call.token, 5))
    out = call.clocked.receive(from_pbx("ACK", route, cseq=1), PBX_SOURCE, at=0.3)
    assert out == []


def test_route_to_someone_else_is_not_taken_for_ours() -> None:
    call = established()
    foreign = call.record_route.replace(f"{PROXY.host}:{PROXY.port}", "192.0.2.99:5060")
    bye = from_pbx("BYE", foreign)
    (forwarded,) = sent_to(call.clocked.receive(bye, PBX_SOURCE, at=1.0), TRUNK)
    assert values(forwarded, "Route") == [foreign]  # not ours: kept, token not interpreted


def test_re_invite_from_the_trunk_and_its_ack_reach_the_pbx_with_to_restored() -> None:
    call = established()
    reinvite = from_trunk("INVITE", call.record_route, cseq=2)
    out = call.clocked.receive(reinvite, TRUNK_SOURCE, at=10.0)
    assert [start_line(o.data) for o in out if o.target == TRUNK] == ["SIP/2.0 100 Trying"]
    (forwarded,) = sent_to(out, PBX)
    assert value(forwarded, "To") == ORIGINAL_FROM
    assert values(forwarded, "Record-Route") == []
    ok = response_to(forwarded, 200, "OK")
    (to_trunk,) = sent_to(call.clocked.receive(ok, PBX_SOURCE, at=10.1), TRUNK)
    assert value(to_trunk, "To") == REWRITTEN_FROM
    assert value(to_trunk, "From") == CALLEE
    ack = in_dialog(
        "ACK", uri=PBX_CONTACT, via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-trunk-ack2",
        from_=CALLEE, to=REWRITTEN_FROM, cseq=2, route=call.record_route,
    )
    out = call.clocked.receive(ack, TRUNK_SOURCE, at=10.2)
    assert [(o.target, start_line(o.data), value(o.data, "To")) for o in out] == [
        (PBX, f"ACK {PBX_CONTACT} SIP/2.0", ORIGINAL_FROM)
    ]


def test_trunk_in_dialog_request_timing_out_at_the_pbx_gets_408_with_the_rewritten_to() -> None:
    call = established()
    out = call.clocked.receive(from_trunk("BYE", call.record_route), TRUNK_SOURCE, at=3.0)
    assert len(sent_to(out, PBX)) == 1
    fired = call.clocked.advance(40.0)
    answers = [o.data for _, o in fired if o.target == TRUNK]
    assert [start_line(a) for a in answers] == ["SIP/2.0 408 Request Timeout"]
    assert value(answers[0], "To").startswith(REWRITTEN_FROM)  # the trunk's own To, as it sent it


# ----------------------------------------------------------------- strict routing (RFC 3261 16.4)
def test_a_strict_router_before_the_proxy_is_undone_and_the_dialog_restored() -> None:
    """A strict router puts our Record-Route URI in the Request-URI and the remote target last in
    the Route set: the proxy puts the target back, drops it from Route, and still rewrites."""
    call = established()
    our_uri = call.record_route.strip("<>")
    bye = in_dialog(
        "BYE",
        uri=our_uri,
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-strict-bye;rport",
        from_=ORIGINAL_FROM,
        to=CALLEE,
        route=f"<sip:other-hop.example.com;lr>, <{TRUNK_CONTACT}>",
    )
    (forwarded,) = sent_to(call.clocked.receive(bye, PBX_SOURCE, at=1.0), TRUNK)
    assert start_line(forwarded) == f"BYE {TRUNK_CONTACT} SIP/2.0"
    assert values(forwarded, "Route") == ["<sip:other-hop.example.com;lr>"]
    assert value(forwarded, "From") == REWRITTEN_FROM
    ok = response_to(forwarded, 200, "OK")
    (back,) = sent_to(call.clocked.receive(ok, TRUNK_SOURCE, at=1.1), PBX)
    assert value(back, "From") == ORIGINAL_FROM


def test_strict_routing_with_a_forged_token_in_the_request_uri_is_refused() -> None:
    call = established()
    first = "B" if call.token[0] == "A" else "A"
    forged = call.record_route.strip("<>").replace(call.token, first + call.token[1:])
    bye = in_dialog(
        "BYE",
        uri=forged,
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-strict-forged;rport",
        from_=ORIGINAL_FROM,
        to=CALLEE,
        route=f"<{TRUNK_CONTACT}>",
    )
    out = call.clocked.receive(bye, PBX_SOURCE, at=1.0)
    assert sent_to(out, TRUNK) == []
    assert [start_line(o.data) for o in out] == ["SIP/2.0 400 Bad Request"]
