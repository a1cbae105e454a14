"""Outbound INVITE from the PBX: 100 Trying, the caller-ID rewrite and the proxy's own edits."""

from __future__ import annotations

import re

import pytest

from proxy.sip.addresses import Source, Target
from proxy.sip.identity import decode_identity
from tests.proxy.sip.support import (
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    SECRET,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    FixedPolicy,
    body_of,
    head_lines,
    header_name,
    invite,
    make_core,
    response_to,
    sent_to,
    start_line,
    value,
    values,
)

SHOWN = '"+3228880001" <sip:+3228880001@127.0.0.1>'
# Headers the proxy has to change on an outbound INVITE; every other line must be byte-identical.
CHANGED = {"via", "from", "max-forwards", "p-asserted-identity", "p-preferred-identity",
           "remote-party-id", "record-route"}
RPID = 'Remote-Party-ID: "Alice" <sip:1001@pbx.example.com>;party=calling;screen=no;privacy=off\r\n'


def forward(
    data: bytes, *, policy: FixedPolicy | None = None, trunk: Target = TRUNK,
    source: Source = PBX_SOURCE,
) -> tuple[bytes, list[bytes]]:
    """Send one request from `source`; return what reached the trunk and what went back."""
    clocked = Clocked(make_core(policy, trunk=trunk))
    out = clocked.receive(data, source)
    to_trunk = sent_to(out, trunk)
    assert len(to_trunk) == 1, out
    back = [o.data for o in out if o.target == source.reply_target()]
    return to_trunk[0], back


def test_100_trying_goes_back_to_the_pbx_with_the_request_identity() -> None:
    request = invite()
    _, back = forward(request)
    assert back == [
        b"SIP/2.0 100 Trying\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport\r\n"
        b'From: "Alice" <sip:1001@pbx.example.com>;tag=pbx-tag-1\r\n'
        b"To: <sip:00442079460000@127.0.0.1>\r\n"
        b"Call-ID: call-1@pbx\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Server: callerid-proxy\r\n"
        b"Content-Length: 0\r\n\r\n"
    ]


def test_from_is_the_chosen_number_at_the_trunk_host_with_the_same_tag() -> None:
    fwd, _ = forward(invite())
    assert value(fwd, "From") == SHOWN + ";tag=pbx-tag-1"


def test_display_name_is_the_number_name_when_it_has_one() -> None:
    policy = FixedPolicy(number="+442071234567", name="ACME UK")
    fwd, _ = forward(invite(), policy=policy)
    assert value(fwd, "From") == '"ACME UK" <sip:+442071234567@127.0.0.1>;tag=pbx-tag-1'
    assert values(fwd, "P-Asserted-Identity") == ['"ACME UK" <sip:+442071234567@127.0.0.1>']


@pytest.mark.parametrize(
    ("trunk", "host"),
    [
        (Target("udp", "192.0.2.10", 5060), "192.0.2.10"),
        (Target("udp", "2001:db8::10", 5060), "[2001:db8::10]"),
        (Target("tcp", "192.0.2.11", 5061), "192.0.2.11"),
    ],
)
def test_from_and_pai_use_the_trunk_host(trunk: Target, host: str) -> None:
    fwd, _ = forward(invite(), trunk=trunk)
    assert value(fwd, "From") == f'"+3228880001" <sip:+3228880001@{host}>;tag=pbx-tag-1'
    assert values(fwd, "P-Asserted-Identity") == [f'"+3228880001" <sip:+3228880001@{host}>']


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "P-Asserted-Identity: <sip:1001@pbx.example.com>\r\n",
        "P-Asserted-Identity: <sip:1001@pbx.example.com>\r\n"
        "P-Asserted-Identity: <tel:+3228889999>\r\n",
        "p-asserted-identity: <sip:1001@pbx.example.com>, <tel:1001>\r\n",
    ],
    ids=["none", "one", "two-lines", "comma-joined-lower-case"],
)
def test_exactly_one_pai_with_the_number_and_no_ppi(extra: str) -> None:
    fwd, _ = forward(invite(extra=extra))
    assert values(fwd, "P-Asserted-Identity") == [SHOWN]
    assert values(fwd, "P-Preferred-Identity") == []


def test_remote_party_id_calling_is_rewritten_and_keeps_its_parameters() -> None:
    fwd, _ = forward(invite(extra=RPID))
    assert values(fwd, "Remote-Party-ID") == [
        SHOWN + ";party=calling;screen=no;privacy=off"
    ]


def test_remote_party_id_of_the_called_party_is_left_alone() -> None:
    called = 'Remote-Party-ID: <sip:00442079460000@127.0.0.1>;party=called\r\n'
    fwd, _ = forward(invite(extra=called))
    assert values(fwd, "Remote-Party-ID") == ["<sip:00442079460000@127.0.0.1>;party=called"]


def test_policy_gets_from_user_and_request_uri_user() -> None:
    policy = FixedPolicy()
    forward(invite(user="1002", to="0033144556677"), policy=policy)
    assert policy.calls == [("1002", "0033144556677")]


def test_policy_gets_the_tel_number_of_a_tel_request_uri() -> None:
    policy = FixedPolicy()
    request = invite().replace(
        b"INVITE sip:00442079460000@127.0.0.1:5060 SIP/2.0", b"INVITE tel:+442079460000 SIP/2.0"
    )
    forward(request, policy=policy)
    assert policy.calls == [("1001", "+442079460000")]


def test_max_forwards_is_decremented() -> None:
    fwd, _ = forward(invite())
    assert values(fwd, "Max-Forwards") == ["69"]


def test_missing_max_forwards_is_added_as_70() -> None:
    request = invite().replace(b"Max-Forwards: 70\r\n", b"")
    fwd, _ = forward(request)
    assert values(fwd, "Max-Forwards") == ["70"]


def test_our_via_is_on_top_with_a_magic_cookie_branch_and_rport() -> None:
    fwd, _ = forward(invite())
    vias = values(fwd, "Via")
    assert len(vias) == 2
    assert re.fullmatch(r"SIP/2\.0/UDP 127\.0\.0\.1:5060;branch=z9hG4bK[^;,]+;rport", vias[0])
    assert vias[0] != vias[1]


def test_pbx_via_gets_received_and_rport() -> None:
    fwd, _ = forward(invite())
    assert values(fwd, "Via")[1] == (
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport=5070;received=127.0.0.1"
    )


def test_rport_carries_the_real_source_port_behind_nat() -> None:
    fwd, _ = forward(invite(), source=Source("udp", "127.0.0.1", 40000))
    assert values(fwd, "Via")[1] == (
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport=40000;received=127.0.0.1"
    )


def test_received_only_when_no_rport_and_the_host_differs() -> None:
    request = invite().replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport",
        b"Via: SIP/2.0/UDP pbx.example.com:5070;branch=z9hG4bK-inv-1",
    )
    fwd, _ = forward(request)
    assert values(fwd, "Via")[1] == (
        "SIP/2.0/UDP pbx.example.com:5070;branch=z9hG4bK-inv-1;received=127.0.0.1"
    )


def test_no_via_parameters_added_when_host_matches_and_no_rport() -> None:
    request = invite().replace(b";branch=z9hG4bK-inv-1;rport", b";branch=z9hG4bK-inv-1")
    fwd, _ = forward(request)
    assert values(fwd, "Via")[1] == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1"


def test_comma_joined_via_only_the_top_value_gets_received_and_rport() -> None:
    request = invite().replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport",
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport, "
        b"SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-phone;rport",
    )
    fwd, _ = forward(request)
    vias = values(fwd, "Via")
    assert vias[1] == (
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport=5070;received=127.0.0.1, "
        "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-phone;rport"
    )


def test_record_route_is_loose_and_carries_the_signed_original_from() -> None:
    fwd, _ = forward(invite())
    (record_route,) = values(fwd, "Record-Route")
    match = re.fullmatch(r"<sip:127\.0\.0\.1:5060;lr;cid=([A-Za-z0-9_.-]+)>", record_route)
    assert match is not None, record_route
    identity = decode_identity(SECRET, "call-1@pbx", match.group(1))
    assert identity.original_from == ORIGINAL_FROM.encode()
    assert identity.rewritten_from == value(fwd, "From").encode()


def test_existing_record_route_is_kept_below_ours() -> None:
    fwd, _ = forward(invite(extra="Record-Route: <sip:pbx.example.com;lr>\r\n"))
    record_routes = values(fwd, "Record-Route")
    assert len(record_routes) == 2
    assert record_routes[0].startswith("<sip:127.0.0.1:5060;lr;cid=")
    assert record_routes[1] == "<sip:pbx.example.com;lr>"


def test_udp_to_tcp_trunk_record_routes_twice_with_the_transport() -> None:
    fwd, _ = forward(invite(), trunk=Target("tcp", "127.0.0.1", 5080))
    top, second = values(fwd, "Record-Route")
    # The dialog's token rides once, in the top entry: both are popped together in the dialog.
    assert top.startswith("<sip:127.0.0.1:5060;transport=tcp;lr;cid=")
    assert second == "<sip:127.0.0.1:5060;lr>"
    assert values(fwd, "Via")[0].startswith("SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK")


def test_content_length_matches_the_unchanged_body() -> None:
    request = invite(extra=RPID + "P-Asserted-Identity: <sip:1001@pbx.example.com>\r\n")
    fwd, _ = forward(request)
    assert body_of(fwd) == body_of(request)
    assert values(fwd, "Content-Length") == [str(len(body_of(fwd)))]


def test_udp_request_without_content_length_gets_one_toward_a_tcp_trunk() -> None:
    request = invite()
    request = request.replace(b"Content-Length: 36\r\n", b"")
    fwd, _ = forward(request, trunk=Target("tcp", "127.0.0.1", 5080))
    assert values(fwd, "Content-Length") == [str(len(body_of(request)))]
    assert body_of(fwd) == body_of(request)


def test_every_other_header_and_the_start_line_are_byte_identical() -> None:
    extra = (
        RPID
        + "X-Custom:  odd   spacing ;x=1\r\n"
        + "Subject: folded\r\n  continuation\r\n"
        + "allow: INVITE, ACK, BYE\r\n"
    )
    request = invite(extra=extra)
    fwd, _ = forward(request)
    assert start_line(fwd) == start_line(request)
    kept_in = [line for line in head_lines(request) if header_name(line) not in CHANGED]
    kept_out = [line for line in head_lines(fwd) if header_name(line) not in CHANGED]
    assert kept_out == kept_in
    assert body_of(fwd) == body_of(request)


def test_compact_from_is_rewritten_in_place() -> None:
    request = invite().replace(b"From: ", b"f: ")
    fwd, _ = forward(request)
    assert [line for line in head_lines(fwd) if header_name(line) == "from"] == [
        "f: " + SHOWN + ";tag=pbx-tag-1"
    ]


def test_only_one_caller_id_decision_per_invite_and_it_is_counted() -> None:
    policy = FixedPolicy()
    clocked = Clocked(make_core(policy))
    clocked.receive(invite(), PBX_SOURCE)
    clocked.receive(invite(), PBX_SOURCE, at=0.2)  # retransmission
    assert policy.calls == [("1001", "00442079460000")]
    assert clocked.core.counters["caller_id_decisions"] == 1


def test_challenge_is_relayed_and_the_authenticated_retry_is_rewritten_like_the_first() -> None:
    policy = FixedPolicy()
    clocked = Clocked(make_core(policy))
    first = invite()
    fwd1 = sent_to(clocked.receive(first, PBX_SOURCE), TRUNK)[0]
    challenge = response_to(
        fwd1, 401, "Unauthorized",
        extra='WWW-Authenticate: Digest realm="trunk", nonce="abc", algorithm=MD5',
    )
    out = clocked.receive(challenge, TRUNK_SOURCE, at=0.1)
    (to_pbx,) = sent_to(out, PBX)
    assert start_line(to_pbx) == "SIP/2.0 401 Unauthorized"
    assert value(to_pbx, "From") == ORIGINAL_FROM
    assert values(to_pbx, "WWW-Authenticate") == [
        'Digest realm="trunk", nonce="abc", algorithm=MD5'
    ]
    (ack,) = sent_to(out, TRUNK)
    assert start_line(ack).startswith("ACK ")

    authorization = (
        'Authorization: Digest username="acme", realm="trunk", nonce="abc", '
        'uri="sip:00442079460000@127.0.0.1:5060", response="0123456789abcdef"\r\n'
    )
    retry = invite(branch="z9hG4bK-inv-2", cseq=2, extra=authorization)
    out = clocked.receive(retry, PBX_SOURCE, at=0.2)
    (fwd2,) = sent_to(out, TRUNK)
    assert value(fwd2, "From") == value(fwd1, "From") == SHOWN + ";tag=pbx-tag-1"
    assert values(fwd2, "P-Asserted-Identity") == [SHOWN]
    assert values(fwd2, "P-Preferred-Identity") == []
    assert value(fwd2, "CSeq") == "2 INVITE"
    assert value(fwd2, "Call-ID") == "call-1@pbx"
    assert values(fwd2, "Authorization") == [authorization.split(": ", 1)[1].rstrip("\r\n")]
    assert values(fwd2, "Via")[0] != values(fwd1, "Via")[0]  # a new transaction, a new branch
    assert policy.calls == [("1001", "00442079460000")] * 2


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("OPTIONS", ""),
        ("MESSAGE", "Content-Type: text/plain\r\n"),
        ("REGISTER", "Contact: <sip:1001@127.0.0.1:5070>\r\nExpires: 3600\r\n"),
    ],
)
def test_other_out_of_dialog_requests_go_to_the_trunk_without_identity_change(
    method: str, extra: str
) -> None:
    request = (
        f"{method} sip:trunk.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-ood-1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {ORIGINAL_FROM}\r\n"
        "To: <sip:trunk.example.com>\r\n"
        "Call-ID: ood-1@pbx\r\n"
        f"CSeq: 7 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    policy = FixedPolicy()
    fwd, back = forward(request, policy=policy)
    assert back == []  # no 100 Trying for a non-INVITE
    assert policy.calls == []
    assert value(fwd, "From") == ORIGINAL_FROM
    assert values(fwd, "Record-Route") == []
    assert values(fwd, "P-Asserted-Identity") == []
    kept_in = [line for line in head_lines(request) if header_name(line) not in CHANGED]
    kept_out = [line for line in head_lines(fwd) if header_name(line) not in CHANGED]
    assert kept_out == kept_in


def test_datagram_octets_after_the_body_are_not_forwarded() -> None:
    request = invite()
    fwd, _ = forward(request + b"\r\nINVITE junk")
    assert body_of(fwd) == body_of(request)
    assert values(fwd, "Content-Length") == [str(len(body_of(request)))]


def test_compact_content_length_is_kept_and_right() -> None:
    request = invite().replace(b"Content-Length: 36", b"l: 36")
    fwd, _ = forward(request)
    assert [line for line in head_lines(fwd) if header_name(line) == "content-length"] == ["l: 36"]
    assert len(body_of(fwd)) == 36
