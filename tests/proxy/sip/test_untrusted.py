"""Trust before work (issue 7): outsiders are judged from a bounded glance, never parsed; they
get a short 403 no larger than what they sent, or nothing; scanners are dropped silently."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from proxy.sip import core as core_module
from proxy.sip import parse as parse_module
from proxy.sip.addresses import Outgoing, Source
from proxy.sip.core import ProxyCore
from proxy.sip.framing import StreamFramer
from proxy.sip.untrusted import GLANCE_BYTES, SCANNER_AGENTS, glance, short_forbidden
from tests.proxy.sip.support import (
    PBX_SOURCE,
    TRUNK,
    in_dialog,
    invite,
    make_core,
    sent_to,
    start_line,
    value,
    values,
)
from tests.proxy.sip.torture_support import NAMES, load

STRANGER = Source("udp", "10.9.9.9", 5060)
STRANGER_TCP = Source("tcp", "10.9.9.9", 40000, connection=42)
TOP_VIA = "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK-top"


def core_with(untrusted: str) -> ProxyCore:
    core = make_core()
    core.config = dataclasses.replace(core.config, untrusted=untrusted)
    return core


def receive(core: ProxyCore, data: bytes, source: Source) -> list[Outgoing]:
    core.receive(data, source, 0.0)
    return core.datagrams_to_send()


def via_flood(vias: int, *, dialog_headers_first: bool) -> bytes:
    """A request with `vias` Via lines, its dialog headers before or after them."""
    dialog = (
        "From: <sip:x@10.9.9.9>;tag=f\r\nTo: <sip:y@10.9.9.9>\r\n"
        "Call-ID: flood@10.9.9.9\r\nCSeq: 1 OPTIONS\r\n"
    )
    stack = f"Via: {TOP_VIA}\r\n" + "".join(
        f"Via: SIP/2.0/UDP 10.9.{n % 250}.{n % 200}:5060;branch=z9hG4bK-{n}\r\n"
        for n in range(vias - 1)
    )
    head = dialog + stack if dialog_headers_first else stack + dialog
    return f"OPTIONS sip:y@10.9.9.9 SIP/2.0\r\n{head}Content-Length: 0\r\n\r\n".encode()


@pytest.fixture
def no_full_parse(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every entry point of the full parser, made to record any call (and fail it)."""
    calls: list[str] = []

    def refusing(name: str) -> Callable[..., object]:
        def called(*args: object, **kwargs: object) -> object:
            calls.append(name)
            raise AssertionError(f"{name} called on the untrusted path")

        return called

    for module, name in (
        (core_module, "parse_message"),
        (core_module, "lenient_split"),
        (parse_module, "split_message"),
    ):
        monkeypatch.setattr(module, name, refusing(name))
    return calls


# ----------------------------------------------------------------------------- never parsed
@pytest.mark.source_build
def test_a_4600_via_datagram_from_an_outsider_never_reaches_the_parser(
    no_full_parse: list[str],
) -> None:
    flood = via_flood(4600, dialog_headers_first=False)
    assert len(flood) > 60_000
    core = make_core()
    assert receive(core, flood, STRANGER) == []  # its dialog headers lie beyond the glance
    assert no_full_parse == []
    assert core.counters["dropped_untrusted"] == 1


@pytest.mark.source_build
def test_an_answerable_via_flood_gets_only_the_top_via_back(no_full_parse: list[str]) -> None:
    flood = via_flood(4600, dialog_headers_first=True)
    core = make_core()
    (out,) = receive(core, flood, STRANGER)
    assert no_full_parse == []
    assert start_line(out.data) == "SIP/2.0 403 Forbidden"
    assert values(out.data, "Via") == [TOP_VIA]
    assert len(out.data) < 300
    assert value(out.data, "To").startswith("<sip:y@10.9.9.9>;tag=")


def test_the_glance_is_bounded() -> None:
    flood = via_flood(4600, dialog_headers_first=False)
    seen = glance(flood)
    assert seen.method == "OPTIONS"
    assert not seen.answerable
    assert seen == glance(flood[:GLANCE_BYTES])


def test_a_trusted_source_is_still_parsed_and_refused_400() -> None:
    core = make_core()
    out = receive(core, invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), PBX_SOURCE)
    assert [start_line(o.data) for o in out] == ["SIP/2.0 400 Bad Request"]


# ----------------------------------------------------------------------------- the short 403
def test_the_403_carries_only_the_rfc_minimum() -> None:
    request = invite(extra="Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-second\r\n")
    (out,) = receive(make_core(), request, STRANGER)
    names = [line.split(":", 1)[0] for line in out.data.decode().split("\r\n")[1:] if line]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Content-Length"]
    assert values(out.data, "Via") == values(request, "Via")[:1]
    assert len(out.data) < len(request)


def test_a_comma_joined_via_stack_is_cut_to_its_top_value() -> None:
    request = invite().replace(
        b"branch=z9hG4bK-inv-1;rport\r\n",
        b"branch=z9hG4bK-inv-1;rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2\r\n",
    )
    (out,) = receive(make_core(), request, STRANGER)
    assert values(out.data, "Via") == ["SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport"]


def test_a_reply_larger_than_the_request_is_not_sent() -> None:
    """Compact forms and a short line: the 403 with its To tag would be the bigger one."""
    tiny = b"X a SIP/2.0\r\nv:SIP/2.0/UDP h\r\nf:a\r\nt:b\r\ni:c\r\nCSeq:1 X\r\n\r\n"
    assert short_forbidden(glance(tiny), len(tiny)) is None
    core = make_core()
    assert receive(core, tiny, STRANGER) == []
    assert core.counters["dropped_untrusted"] == 1


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("name", NAMES)
def test_no_reply_to_a_torture_message_is_larger_than_it(name: str, transport: str) -> None:
    data = load(name)
    source = STRANGER if transport == "udp" else STRANGER_TCP
    core = make_core()
    if transport == "udp":
        out = receive(core, data, source)
    else:
        out = []
        for frame in StreamFramer().feed(data):
            if frame.fatal:
                core.receive_broken_stream(frame.data, frame.reason, source)
            else:
                core.receive(frame.data, source, 0.0)
            out += core.datagrams_to_send()
    assert sent_to(out, TRUNK) == []
    for outgoing in out:
        assert len(outgoing.data) <= len(data), start_line(outgoing.data)
        assert outgoing.target == source.reply_target()
        if outgoing.data:
            assert start_line(outgoing.data) == "SIP/2.0 403 Forbidden"
        assert outgoing.close_after is (transport == "tcp")


# ----------------------------------------------------------------------------- modes, TCP
def test_drop_mode_answers_nothing() -> None:
    core = core_with("drop")
    assert receive(core, invite(), STRANGER) == []
    assert core.counters["dropped_untrusted"] == 1
    assert core.counters["refused_403"] == 0


def test_drop_mode_over_tcp_closes_the_connection_without_a_word() -> None:
    core = core_with("drop")
    out = receive(core, invite(), STRANGER_TCP)
    assert out == [Outgoing(b"", STRANGER_TCP.reply_target(), 42, True)]


def test_a_refusal_over_tcp_closes_the_connection() -> None:
    (out,) = receive(make_core(), invite(), STRANGER_TCP)
    assert start_line(out.data) == "SIP/2.0 403 Forbidden"
    assert (out.connection, out.close_after) == (42, True)


@pytest.mark.source_build
def test_an_unframeable_stream_from_an_outsider_is_judged_the_same_way(
    no_full_parse: list[str],
) -> None:
    core = make_core()
    head = invite().split(b"Content-Length")[0] + b"\r\n"
    core.receive_broken_stream(head, "missing Content-Length", STRANGER_TCP)
    (out,) = core.datagrams_to_send()
    assert start_line(out.data) == "SIP/2.0 403 Forbidden" and out.close_after
    assert no_full_parse == []


def test_an_untrusted_ack_is_never_answered() -> None:
    ack = in_dialog(
        "ACK", uri="sip:x@127.0.0.1", via=TOP_VIA, from_="<sip:a@b>;tag=1", to="<sip:c@d>;tag=2"
    )
    core = make_core()
    assert receive(core, ack, STRANGER) == []
    assert receive(core, ack, STRANGER_TCP) == [
        Outgoing(b"", STRANGER_TCP.reply_target(), 42, True)
    ]


# ----------------------------------------------------------------------------- scanners
SCANNER_SAMPLES = [
    "friendly-scanner",
    "sipvicious",
    "SIPVicious 0.3.4",
    "sipcli/v1.8",
    "VaxSIPUserAgent/3.1",
    "sundayddr",
    "iWar",
    "sip-scan",
    "SIPScan",
    "Friendly-Scanner 2.0",
]


@pytest.mark.parametrize("agent", SCANNER_SAMPLES)
@pytest.mark.parametrize("mode", ["reply", "drop"])
def test_scanner_user_agents_are_dropped_silently_and_counted(agent: str, mode: str) -> None:
    options = in_dialog(
        "OPTIONS", uri="sip:100@10.0.0.1", via=TOP_VIA, from_="<sip:100@10.9.9.9>;tag=s",
        to="<sip:100@10.0.0.1>", cseq=1, extra=f"User-Agent: {agent}\r\n",
    )
    core = core_with(mode)
    assert receive(core, options, STRANGER) == []
    assert core.counters["dropped_scanner"] == 1
    assert core.counters["refused_403"] == 0


def test_every_table_entry_is_lower_case_so_the_match_ignores_case() -> None:
    assert all(agent == agent.lower() for agent in SCANNER_AGENTS)


def test_an_ordinary_user_agent_from_an_outsider_gets_the_403() -> None:
    request = invite(extra="User-Agent: Asterisk PBX 20.5.0\r\n")
    (out,) = receive(make_core(), request, STRANGER)
    assert start_line(out.data) == "SIP/2.0 403 Forbidden"
