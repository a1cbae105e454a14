"""The transaction layer on its own, without ProxyCore: messages in, outgoing/events/actions out.

It owns what it sends and what happened, returns actions where the core must act, builds CANCEL
and ACK from the fields it stored (checked against the old way: parsing the bytes it sent), and
moves through RFC 3261's state tables.
"""

from __future__ import annotations

import gc

import pytest

from proxy.sip.addresses import Target
from proxy.sip.caller_id import replace_identity_header
from proxy.sip.edits import Edit, apply_edits, insert_first_header
from proxy.sip.events import Answered, FailedOver, Forwarded, ResponseRelayed, TimedOut
from proxy.sip.message import SipMessage
from proxy.sip.parse import Message, parse_message
from proxy.sip.responses import build_hop_request
from proxy.sip.timers import TIMER_B, TIMER_D, TIMER_H, Timer
from proxy.sip.transaction_layer import RelayStateless, Retarget, TransactionLayer, hop_request
from proxy.sip.transactions import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    ClientTransaction,
    ForwardPlan,
    Input,
    ServerTransaction,
    State,
    next_state,
    outgoing_branch,
)
from tests.proxy.sip.support import (
    BACKUP,
    PBX,
    PBX_SOURCE,
    TRUNK,
    in_dialog,
    invite,
    response_to,
    start_line,
    value,
    values,
)

OUR_VIA = b"SIP/2.0/UDP 127.0.0.1:5060;branch=BRANCH;rport"
NEW_FROM = b'"+3228880001" <sip:+3228880001@127.0.0.1>;tag=pbx-tag-1'


def parsed(data: bytes) -> Message:
    return parse_message(data, datagram=True)


def forward(
    layer: TransactionLayer, server: ServerTransaction, target: Target, attempt: int, now: float
) -> ClientTransaction:
    """What the core does: the request with our Via and a rewritten From, as a client."""
    msg = server.request
    assert msg is not None
    branch = outgoing_branch(server.key, f"udp#{attempt}")
    via = OUR_VIA.replace(b"BRANCH", branch.encode())
    edits = replace_identity_header(msg, "from", NEW_FROM)
    data = apply_edits(msg.raw, [insert_first_header(msg.wire, "Via", via), *edits])
    client = ClientTransaction(branch, msg.method, target, data, server.key, None)
    layer.start_client(client, now, "trunk")
    return client


def invite_server(
    layer: TransactionLayer, *, alternatives: tuple[Target, ...] = ()
) -> ServerTransaction:
    server = layer.open_server(parsed(invite()), PBX_SOURCE, 0.0)
    server.plan = ForwardPlan("pbx", None, (), None, False, 0)
    server.alternatives = list(alternatives)
    return server


def test_an_invite_server_answers_100_at_once_from_its_own_outbox() -> None:
    layer = TransactionLayer()
    server = invite_server(layer)
    (trying,) = layer.take_outgoing()
    assert start_line(trying.data) == "SIP/2.0 100 Trying"
    assert trying.target == PBX
    assert server.state is State.PROCEEDING
    assert layer.take_outgoing() == []  # taken once


def test_client_provisional_and_2xx_go_upstream_with_events_and_latency() -> None:
    layer = TransactionLayer()
    server = invite_server(layer)
    client = forward(layer, server, TRUNK, 0, 0.0)
    layer.take_outgoing()
    states = [client.state]
    ringing_in = parsed(response_to(client.request, 180, "Ringing"))
    assert layer.on_response(client, ringing_in, 0.25) == []
    states.append(client.state)
    (ringing,) = layer.take_outgoing()
    assert start_line(ringing.data) == "SIP/2.0 180 Ringing" and ringing.target == PBX
    assert values(ringing.data, "Via") == values(invite(), "Via")  # our Via off
    assert states == [State.CALLING, State.PROCEEDING]
    layer.on_response(client, parsed(response_to(client.request, 200, "OK")), 1.0)
    assert start_line(layer.take_outgoing()[0].data) == "SIP/2.0 200 OK"
    assert server.state is State.ACCEPTED
    events = layer.take_events()
    assert events[0] == Forwarded("INVITE", TRUNK, "trunk")
    relayed = [e for e in events if isinstance(e, ResponseRelayed)]
    assert [(e.status, e.since_request, e.first) for e in relayed] == [
        (180, 0.25, True),
        (200, 1.0, False),
    ]


def test_the_parsed_request_is_released_once_a_final_went_upstream() -> None:
    """For Timers H/I/J/L a transaction keeps a few values, not the parsed message."""
    layer = TransactionLayer()
    server = invite_server(layer)
    client = forward(layer, server, TRUNK, 0, 0.0)
    held: list[object] = [server.request, server.plan]
    assert None not in held
    layer.on_response(client, parsed(response_to(client.request, 200, "OK")), 0.1)
    held = [server.request, server.plan, server.alternatives]
    assert held == [None, None, []]
    retransmitted = parsed(invite())
    assert layer.absorb(retransmitted, 0.2)  # still absorbs retransmissions by its key


def test_a_2xx_retransmission_after_the_client_ended_is_an_action_for_the_core() -> None:
    layer = TransactionLayer()
    server = invite_server(layer)
    client = forward(layer, server, TRUNK, 0, 0.0)
    ok = parsed(response_to(client.request, 200, "OK"))
    layer.on_response(client, ok, 0.1)
    assert layer.client_for(client.branch, "INVITE") is None  # ended on the 2xx
    actions = layer.on_response(client, ok, 0.2)
    assert actions == [RelayStateless(ok)]


def test_a_failover_status_returns_retarget_and_acks_the_failed_trunk() -> None:
    layer = TransactionLayer()
    server = invite_server(layer, alternatives=(BACKUP,))
    client = forward(layer, server, TRUNK, 0, 0.0)
    layer.take_outgoing()
    unavailable = parsed(response_to(client.request, 503, "Service Unavailable"))
    actions = layer.on_response(client, unavailable, 0.5)
    assert actions == [Retarget(server.key, BACKUP, 1)]
    (ack,) = layer.take_outgoing()  # nothing upstream: the next trunk's answer will be
    assert ack.target == TRUNK and start_line(ack.data).startswith("ACK ")
    assert FailedOver("INVITE", TRUNK, BACKUP, 503, "503") in layer.take_events()


def test_ack_and_cancel_for_a_forwarded_invite_are_read_from_its_bytes() -> None:
    """RFC 3261 9.1 and 17.1.1.3: Request-URI, top Via (ours), Route set, From (rewritten),
    Call-ID, To and CSeq number as sent; the same as the reference builder gives."""
    layer = TransactionLayer()
    request = invite(extra="Route: <sip:next.example.com;lr>, <sip:last.example.com;lr>\r\n")
    server = layer.open_server(parsed(request), PBX_SOURCE, 0.0)
    client = forward(layer, server, TRUNK, 0, 0.0)
    sent_wire = parsed(client.request).wire
    cancel = hop_request(client.request, "CANCEL")
    assert cancel == build_hop_request(sent_wire, "CANCEL")
    assert start_line(cancel) == "CANCEL sip:00442079460000@127.0.0.1:5060 SIP/2.0"
    assert values(cancel, "Via") == values(client.request, "Via")[:1]  # ours only
    busy = parsed(response_to(client.request, 486, "Busy Here"))
    to = busy.raw[busy.wire.one("to").value_start : busy.wire.one("to").value_end]
    assert hop_request(client.request, "ACK", to) == build_hop_request(sent_wire, "ACK", to)
    assert value(hop_request(client.request, "ACK", to), "From") == NEW_FROM.decode()


def test_a_pending_invite_keeps_its_bytes_not_the_parse_of_what_it_forwarded() -> None:
    """Issue 7: the parse behind a pending call was 5.6 KB of small objects per call."""
    layer = TransactionLayer()
    server = layer.open_server(parsed(invite()), PBX_SOURCE, 0.0)
    client = forward(layer, server, TRUNK, 0, 0.0)
    held = gc.get_referents(client)  # its attribute values, in the compiled build too
    assert isinstance(client.request, bytes)
    assert not any(isinstance(value, (SipMessage, Message)) for value in held), held


def test_removed_route_headers_are_not_in_the_cancel() -> None:
    msg = parsed(invite(extra="Route: <sip:127.0.0.1:5060;lr>\r\n"))
    route = msg.wire.one("route")
    via = insert_first_header(msg.wire, "Via", OUR_VIA)
    sent = apply_edits(msg.raw, [via, Edit(route.start, route.end, b"")])
    assert values(hop_request(sent, "CANCEL"), "Route") == []


def test_timer_b_answers_408_upstream_with_a_timed_out_event() -> None:
    layer = TransactionLayer()
    server = invite_server(layer)
    forward(layer, server, TRUNK, 0, 10.0)
    layer.take_outgoing()
    layer.take_events()
    while (deadline := layer.next_deadline()) is not None and deadline <= 10.0 + TIMER_B:
        assert layer.handle_timer(deadline) == []
    answers = [o for o in layer.take_outgoing() if o.target == PBX]
    assert [start_line(o.data) for o in answers] == ["SIP/2.0 408 Request Timeout"]
    assert TimedOut("INVITE", TRUNK, "B", 408) in layer.take_events()
    assert server.state is State.COMPLETED


def test_transport_failure_uses_the_now_it_is_given() -> None:
    """503 upstream, and Timer H counts from the `now` passed in, not a stored time."""
    layer = TransactionLayer()
    server = invite_server(layer)
    forward(layer, server, TRUNK, 0, 0.0)
    layer.take_outgoing()
    assert layer.transport_failed(TRUNK, 50.0) == []
    (answer,) = layer.take_outgoing()
    assert start_line(answer.data) == "SIP/2.0 503 Service Unavailable"
    assert Answered("INVITE", TRUNK, 503, "Service Unavailable") in layer.take_events()
    deadlines = []
    while (deadline := layer.next_deadline()) is not None:
        deadlines.append(deadline)
        layer.handle_timer(deadline)
    assert max(deadlines) == 50.0 + TIMER_H
    assert layer.count == 0


def test_transport_failure_with_a_next_trunk_returns_retarget() -> None:
    layer = TransactionLayer()
    server = invite_server(layer, alternatives=(BACKUP,))
    forward(layer, server, TRUNK, 0, 0.0)
    assert layer.transport_failed(TRUNK, 3.0) == [Retarget(server.key, BACKUP, 1)]


def test_every_transaction_ends_and_the_tables_empty() -> None:
    layer = TransactionLayer()
    server = invite_server(layer)
    client = forward(layer, server, TRUNK, 0, 0.0)
    layer.on_response(client, parsed(response_to(client.request, 486, "Busy Here")), 0.1)
    options = parsed(
        in_dialog(
            "OPTIONS",
            uri="sip:x@127.0.0.1",
            via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o",
            from_="<sip:a@b>;tag=1",
            to="<sip:x@127.0.0.1>",
            cseq=1,
        )
    )
    other = layer.open_server(options, PBX_SOURCE, 0.0)
    other.plan = ForwardPlan("pbx", None, (), None, False, 0)
    forward(layer, other, TRUNK, 0, 0.0)
    assert layer.count == 4
    layer.handle_timer(TIMER_D + TIMER_H + 100.0)
    layer.handle_timer(TIMER_D + TIMER_H + 200.0)
    assert layer.count == 0 and layer.timer_count == 0


# ----------------------------------------------------------------- the state tables
@pytest.mark.parametrize(
    ("machine", "state", "event", "expected"),
    [
        # figure 5 (INVITE client)
        (INVITE_CLIENT, State.CALLING, Input.PROVISIONAL, State.PROCEEDING),
        (INVITE_CLIENT, State.CALLING, Input.FAILURE, State.COMPLETED),
        (INVITE_CLIENT, State.PROCEEDING, Input.SUCCESS, State.TERMINATED),
        (INVITE_CLIENT, State.COMPLETED, Input.END, State.TERMINATED),
        (INVITE_CLIENT, State.CALLING, Input.TRANSPORT_ERROR, State.TERMINATED),
        # figure 6 (non-INVITE client)
        (NON_INVITE_CLIENT, State.TRYING, Input.PROVISIONAL, State.PROCEEDING),
        (NON_INVITE_CLIENT, State.PROCEEDING, Input.SUCCESS, State.COMPLETED),
        (NON_INVITE_CLIENT, State.COMPLETED, Input.END, State.TERMINATED),
        # figure 7 + RFC 6026 (INVITE server)
        (INVITE_SERVER, State.PROCEEDING, Input.SUCCESS, State.ACCEPTED),
        (INVITE_SERVER, State.PROCEEDING, Input.FAILURE, State.COMPLETED),
        (INVITE_SERVER, State.COMPLETED, Input.ACK, State.CONFIRMED),
        (INVITE_SERVER, State.CONFIRMED, Input.END, State.TERMINATED),
        (INVITE_SERVER, State.ACCEPTED, Input.END, State.TERMINATED),
        # figure 8 (non-INVITE server)
        (NON_INVITE_SERVER, State.TRYING, Input.PROVISIONAL, State.PROCEEDING),
        (NON_INVITE_SERVER, State.TRYING, Input.FAILURE, State.COMPLETED),
        (NON_INVITE_SERVER, State.COMPLETED, Input.END, State.TERMINATED),
        # not in the table: the state stays (a late retransmission)
        (INVITE_SERVER, State.ACCEPTED, Input.FAILURE, State.ACCEPTED),
        (INVITE_CLIENT, State.TERMINATED, Input.PROVISIONAL, State.TERMINATED),
    ],
)
def test_state_tables(machine: dict[tuple[State, Input], State], state: State, event: Input,
                      expected: State) -> None:
    assert next_state(machine, state, event) is expected


def test_states_carry_the_rfc_names() -> None:
    assert [s.value for s in State] == [
        "Calling", "Trying", "Proceeding", "Completed", "Confirmed", "Accepted", "Terminated",
    ]


def test_a_100_by_branch_alone_stops_timer_a_and_arms_timer_c() -> None:
    """`on_trying` (the core's 100 Trying glance, no Message): the live client's step, as a
    parsed 100 takes it (RFC 3261 17.1.1.2: Calling -> Proceeding; Timer C armed); None for a
    branch no live client holds."""
    layer = TransactionLayer()
    client = forward(layer, invite_server(layer), TRUNK, 0, 0.0)
    layer.take_outgoing()
    assert layer.on_trying("z9hG4bKcp-unknown", "INVITE", 0.1) is None
    assert layer.on_trying(client.branch, "BYE", 0.1) is None  # the CSeq method is in the key
    assert layer.on_trying(client.branch, "INVITE", 0.1) == []
    assert client.state is State.PROCEEDING
    assert layer.take_outgoing() == []  # hop by hop: nothing goes upstream
    assert layer.next_deadline() == pytest.approx(0.1 + 180.0)  # Timer C, not Timer A's 0.5


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
def test_a_100_by_branch_is_the_step_a_parsed_100_takes(method: str) -> None:
    """Side by side: `on_trying` and `on_response` with the parsed 100 leave the same state,
    the same timers (Timer E at T2 for a non-INVITE, RFC 3261 17.1.2.2) and the same output."""
    outcomes = []
    for glanced in (True, False):
        layer = TransactionLayer()
        request = invite() if method == "INVITE" else in_dialog(
            "OPTIONS", uri="sip:x@127.0.0.1", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o",
            from_="<sip:1001@pbx.example.com>;tag=o", to="<sip:x@127.0.0.1>",
        )
        server = layer.open_server(parsed(request), PBX_SOURCE, 0.0)
        server.plan = ForwardPlan("pbx", None, (), None, False, 0)
        client = forward(layer, server, TRUNK, 0, 0.0)
        layer.take_outgoing()
        trying = parsed(response_to(client.request, 100, "Trying", to_tag=None))
        if glanced:
            actions = layer.on_trying(client.branch, method, 0.1)
        else:
            actions = layer.on_response(client, trying, 0.1)
        deadlines = []
        while (deadline := layer.next_deadline()) is not None and deadline < 40.0:
            deadlines.append(deadline)
            layer.handle_timer(deadline)
        sent = [(o.target, start_line(o.data)) for o in layer.take_outgoing()]
        outcomes.append((actions, client.state, client.retransmit_interval, deadlines, sent))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    ("method", "status", "left"),
    [("INVITE", 200, set()), ("INVITE", 486, {"D"}), ("OPTIONS", 200, {"K"})],
)
def test_a_final_response_leaves_only_the_retired_clients_timer(
    method: str, status: int, left: set[str]
) -> None:
    """Only the letters of the client's kind are cancelled (INVITE: A, B, C, no-answer;
    others: E, F, no-answer): none of its live timers may outlast the final response."""
    layer = TransactionLayer(no_answer_timeout=2.0)
    if method == "INVITE":
        server = invite_server(layer)
    else:
        request = in_dialog(
            method, uri="sip:x@127.0.0.1", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o",
            from_="<sip:a@b>;tag=1", to="<sip:x@127.0.0.1>", cseq=1,
        )  # fmt: skip
        server = layer.open_server(parsed(request), PBX_SOURCE, 0.0)
        server.plan = ForwardPlan("pbx", None, (), None, False, 0)
    client = forward(layer, server, TRUNK, 0, 0.0)
    if method == "INVITE":
        layer.on_response(client, parsed(response_to(client.request, 180, "Ringing")), 0.05)
        assert layer._timers.is_armed(client.key, "C")
    layer.on_response(client, parsed(response_to(client.request, status, "X")), 0.1)
    armed = {t.value for t in Timer if layer._timers.is_armed(client.key, t.value)}
    assert armed == left
