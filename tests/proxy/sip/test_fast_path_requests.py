"""The request side of the fast path (issue 6): a dialog whose token the version before it made
keeps restoring; our Via / Record-Route bytes, formatted at config time, are the ones the RFCs ask
for; our Route URIs parse as the grammar parses them."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.sip.addresses import Target
from proxy.sip.errors import BadRequest
from proxy.sip.grammar import SipUri, parse_sip_uri
from proxy.sip.our_address import OurAddress
from proxy.sip.policy import PBX_SIDE, TRUNK_SIDE, ProxyConfig
from proxy.sip.requests import _parse_route_uri
from tests.proxy.sip.support import (
    CALLEE,
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    PROXY,
    REWRITTEN_FROM,
    SECRET,
    TRUNK,
    TRUNK_CONTACT,
    TRUNK_SOURCE,
    Clocked,
    in_dialog,
    make_core,
    response_to,
    sent_to,
    start_line,
    value,
    values,
)

# Made by the version before the fast path for call-1@pbx with support.SECRET: the token of a
# call set up before an upgrade (previous construction, HMAC-SHA256 keystream, 16-byte IV).
PREVIOUS_TOKEN = (
    "LTkWdZcdoxPVs6XLFMXJt0M0pXE3HnXlchnE5d0yJdO_NXqfmZYc5zebOpihffNWeV7LuwVGOMv1ItnWh12y9O2n_"
    "LP3WoU4BacNOVkyfIfCUiEfM9uQAQj1VfyYerWokZumIpJC-XM.mD7WejpdizKVqt-fQYmQog"
)
PREVIOUS_ROUTE = f"<sip:127.0.0.1:5060;lr;cid={PREVIOUS_TOKEN}>"


def bye_from_pbx(route: str) -> bytes:
    return in_dialog(
        "BYE",
        uri=TRUNK_CONTACT,
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-pbx-bye;rport",
        from_=ORIGINAL_FROM,
        to=CALLEE,
        call_id="call-1@pbx",
        cseq=2,
        route=route,
    )


def test_a_bye_of_a_call_set_up_before_the_upgrade_is_rewritten_and_restored() -> None:
    clocked = Clocked(make_core())
    (forwarded,) = sent_to(clocked.receive(bye_from_pbx(PREVIOUS_ROUTE), PBX_SOURCE, at=1.0), TRUNK)
    assert value(forwarded, "From") == REWRITTEN_FROM
    assert values(forwarded, "Route") == []
    out = clocked.receive(response_to(forwarded, 200, "OK"), TRUNK_SOURCE, at=1.1)
    assert [(value(o.data, "From"), o.target) for o in out] == [(ORIGINAL_FROM, PBX)]


def test_a_bye_from_the_trunk_of_a_call_set_up_before_the_upgrade_has_to_restored() -> None:
    clocked = Clocked(make_core())
    bye = in_dialog(
        "BYE",
        uri="sip:1001@127.0.0.1:5070",
        via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-trunk-bye",
        from_=CALLEE,
        to=REWRITTEN_FROM,
        call_id="call-1@pbx",
        cseq=1,
        route=PREVIOUS_ROUTE,
    )
    (forwarded,) = sent_to(clocked.receive(bye, TRUNK_SOURCE, at=1.0), PBX)
    assert value(forwarded, "To") == ORIGINAL_FROM


def test_a_tampered_token_of_the_previous_construction_is_refused_with_400() -> None:
    clocked = Clocked(make_core())
    flipped = "A" if PREVIOUS_TOKEN[5] != "A" else "B"
    tampered = PREVIOUS_TOKEN[:5] + flipped + PREVIOUS_TOKEN[6:]
    route = PREVIOUS_ROUTE.replace(PREVIOUS_TOKEN, tampered)
    out = clocked.receive(bye_from_pbx(route), PBX_SOURCE, at=1.0)
    assert [(start_line(o.data), o.target) for o in out] == [("SIP/2.0 400 Bad Request", PBX)]


@pytest.mark.parametrize(
    ("ours", "via", "record_route"),
    [
        (Target("udp", "192.0.2.1", 5060), "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=",
         "<sip:192.0.2.1:5060;lr"),
        (Target("tcp", "192.0.2.1", 5060), "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=",
         "<sip:192.0.2.1:5060;transport=tcp;lr"),
        # RFC 3261 19.1.1 / 26.2: TLS to us is transport=tls on a sip: URI, not sips:
        (Target("tls", "192.0.2.1", 5061), "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=",
         "<sip:192.0.2.1:5061;transport=tls;lr"),
        (Target("udp", "2001:db8::1", 5060), "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=",
         "<sip:[2001:db8::1]:5060;lr"),
    ],
)
def test_our_address_bytes(ours: Target, via: str, record_route: str) -> None:
    address = OurAddress.of(ours)
    assert (address.via_prefix, address.record_route_prefix) == (
        via.encode(), record_route.encode()
    )


def test_the_config_formats_its_facing_addresses_once_and_as_facing_says() -> None:
    config = ProxyConfig(
        advertised=(PROXY, Target("tcp", PROXY.host, PROXY.port), Target("udp", "::1", 5060)),
        pbx=PBX,
        trunk=TRUNK,
        secret=SECRET,
        trusted=(ipaddress.ip_network("10.0.0.0/8"),),
        trunk_facing="203.0.113.9",
    )
    for side in (PBX_SIDE, TRUNK_SIDE):
        for transport in ("udp", "tcp"):
            for peer in ("127.0.0.1", "::1"):
                address = config.facing_address(side, transport, peer)
                assert address == OurAddress.of(config.facing(side, transport, peer))
                assert address is config.facing_address(side, transport, peer)  # no per call work
    trunk_side = config.facing_address(TRUNK_SIDE, "udp", "127.0.0.1")
    assert trunk_side.via_prefix == b"Via: SIP/2.0/UDP 203.0.113.9:5060;branch="


@given(
    st.sampled_from(["sip", "sips", "SIP", "tel"]),
    st.sampled_from(["", "user@", "a;b=c@", "u:pw@"]),
    st.sampled_from(["127.0.0.1", "[::1]", "Proxy.Example.COM", "bad host", "", "h\n", "[::1"]),
    st.sampled_from(["", ":5060", ":0", ":70000", ":x"]),
    st.lists(st.text(alphabet="abc=; ?@LR-_.", max_size=12), max_size=4),
)
def test_route_uris_parse_as_the_grammar_parses_them(
    scheme: str, user: str, host: str, port: str, params: list[str]
) -> None:
    text = f"{scheme}:{user}{host}{port}" + "".join(";" + p for p in params)
    expected: SipUri | str
    try:
        expected = parse_sip_uri(text)
    except BadRequest:
        expected = "refused"
    try:
        got: SipUri | str = _parse_route_uri(text)
    except BadRequest:
        got = "refused"
    assert got == expected
