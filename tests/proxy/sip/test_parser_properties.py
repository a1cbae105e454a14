"""Property tests: whatever arrives, the parser refuses with a SipError or parses, the core never
raises, and a valid message left untouched re-serialises byte-identical."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from proxy.sip.addresses import Source
from proxy.sip.edits import apply_edits
from proxy.sip.errors import SipError
from proxy.sip.framing import StreamFramer
from proxy.sip.parse import parse_message
from tests.proxy.sip.support import PBX_SOURCE, TRUNK_SOURCE, invite, make_core
from tests.proxy.sip.torture_support import NAMES, load

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
CORPUS = [load(name) for name in NAMES] + [invite()]
TCP_PBX = Source("tcp", "127.0.0.1", 40002, connection=3)


def parse_or_refuse(data: bytes) -> None:
    for datagram in (True, False):
        try:
            parse_message(data, datagram=datagram)
        except SipError as error:
            assert 400 <= error.status_code < 600


def core_survives(data: bytes) -> None:
    core = make_core()
    for source in (PBX_SOURCE, TRUNK_SOURCE):
        core.receive(data, source, 0.0)
    framer = StreamFramer()
    for frame in framer.feed(data):
        if frame.fatal:
            core.receive_broken_stream(frame.data, frame.reason, TCP_PBX)
        else:
            core.receive(frame.data, TCP_PBX, 0.0)
    core.handle_timer(100.0)
    for out in core.datagrams_to_send():
        # Whatever the core forwards or relays is a sound message. Its own error answers copy
        # the request's headers as they came (RFC 3261 8.2.6.2), so they may be as broken.
        own_error = b"Server: callerid-proxy\r\n" in out.data and out.data[8:9] in b"456"
        if out.data and not own_error:
            parse_message(out.data, datagram=out.target.transport == "udp")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A torture or valid message with a few byte-level mutations."""
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            special = st.sampled_from([b"\r\n", b"\r\n ", b":", b",", b";", b"<", b">", b'"',
                                       b"\x00", b"\r\n\r\n", b"Content-Length: 5\r\n", b"%"])
            data[position:position] = draw(special | st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[position:]
        else:
            end = position + draw(st.integers(1, 80))
            data[position:position] = data[position:end]
    return bytes(data)


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_only_ever_raise_sip_errors(data: bytes) -> None:
    parse_or_refuse(data)
    core_survives(data)


@SETTINGS
@given(st.lists(st.sampled_from([b"INVITE ", b"SIP/2.0", b" ", b"\r\n", b"Via:", b"v:", b"l: ",
                                 b"-1", b"0", b"9999", b"Content-Length:", b";branch=z9hG4bK",
                                 b"sip:a@b", b"<", b">", b"\r\n\r\n", b"CSeq: 1 INVITE",
                                 b"Call-ID: x", b"From:", b"To:", b",", b"\t"]), max_size=40))
def test_sip_shaped_noise_only_ever_raises_sip_errors(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    parse_or_refuse(data)
    core_survives(data)


@SETTINGS
@given(mutated())
def test_mutated_messages_only_ever_raise_sip_errors(data: bytes) -> None:
    parse_or_refuse(data)
    core_survives(data)


# ----------------------------------------------------------------------------- valid messages
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
hosts = st.from_regex(r"[a-z][a-z0-9\-]{0,8}(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True)
spaces = st.sampled_from(["", " ", "  ", "\t", " \r\n ", "\r\n\t"])
case = st.sampled_from(["lower", "upper", "title", "as is"])
Generated = tuple[bytes, dict[str, object]]


@st.composite
def header_name(draw: st.DrawFn, full: str, compact: str | None) -> str:
    name = compact if compact and draw(st.booleans()) else full
    how = draw(case)
    cased = {"lower": name.lower(), "upper": name.upper(), "title": name.title()}.get(how, name)
    return cased + draw(st.sampled_from(["", " ", "\t"]))


@st.composite
def via_value(draw: st.DrawFn) -> str:
    sep = draw(st.sampled_from(["/", " / "]))
    port = draw(st.none() | st.integers(1, 65535))
    hostport = draw(hosts) + (f":{port}" if port else "")
    transport = draw(st.sampled_from(["UDP", "TCP", "tls", "SCTP"]))
    return f"SIP{sep}2.0{sep}{transport} {hostport};branch=z9hG4bK{draw(tokens)}"


@st.composite
def valid_message(draw: st.DrawFn) -> Generated:
    method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER"]) | tokens)
    call_id = draw(tokens) + "@" + draw(hosts)
    number = draw(st.integers(0, 2**31 - 1))
    vias = draw(st.lists(via_value(), min_size=1, max_size=4))
    joined = draw(st.booleans())
    via_lines = [", ".join(vias)] if joined else vias
    body = draw(st.binary(max_size=60)).replace(b"\r", b"").decode("latin-1")
    headers = [f"{draw(header_name('Via', 'v'))}:{draw(spaces)}{value}" for value in via_lines]
    display = draw(st.none() | tokens)
    from_value = (f'"{display}" ' if display else "") + f"<sip:{draw(tokens)}@{draw(hosts)}>"
    headers += [
        f"{draw(header_name('From', 'f'))}:{draw(spaces)}{from_value};tag={draw(tokens)}",
        f"{draw(header_name('To', 't'))}: sip:{draw(tokens)}@{draw(hosts)}",
        f"{draw(header_name('Call-ID', 'i'))}: {call_id}",
        f"{draw(header_name('CSeq', None))}:{draw(spaces)}{number}{draw(spaces) or ' '}{method}",
        f"{draw(header_name('Max-Forwards', None))}: {draw(st.integers(0, 255))}",
    ]
    extras = draw(st.lists(st.tuples(tokens, st.text(TOKEN_CHARS + " ;,=<>:@", max_size=20)),
                           max_size=4))
    headers += [f"X-{name}:{draw(spaces)}{value}" for name, value in extras]
    headers = draw(st.permutations(headers))
    headers.append(f"{draw(header_name('Content-Length', 'l'))}: {len(body)}")
    start = f"{method} sip:{draw(tokens)}@{draw(hosts)} SIP/2.0"
    text = start + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n" + body
    return text.encode("latin-1"), {
        "call_id": call_id, "cseq": (number, method), "vias": len(vias), "body": body
    }


@SETTINGS
@given(valid_message())
def test_valid_messages_round_trip_byte_identical(generated: Generated) -> None:
    data, fields = generated
    msg = parse_message(data, datagram=True)
    assert apply_edits(msg.raw, [], msg.wire.body_end) == data
    assert msg.call_id == fields["call_id"]
    assert (msg.cseq_number, msg.cseq_method) == fields["cseq"]
    assert len(msg.vias) == fields["vias"]
    assert msg.wire.body == str(fields["body"]).encode("latin-1")
    lines = [msg.wire.start_line_bytes()] + [data[h.start : h.end] for h in msg.wire.headers]
    assert b"".join(lines) + b"\r\n" + msg.wire.body == data
    framer = StreamFramer()
    frames = [f for i in range(len(data)) for f in framer.feed(data[i : i + 1])]
    assert [frame.data for frame in frames] == [data]
    assert parse_message(frames[0].data, datagram=False) == msg


@SETTINGS
@given(valid_message(), st.lists(st.integers(1, 50), max_size=30))
def test_valid_messages_frame_the_same_whatever_the_reads(
    generated: Generated, sizes: list[int]
) -> None:
    data = generated[0]
    stream = data + b"\r\n\r\n" + data
    framer = StreamFramer()
    frames = []
    position = 0
    for size in sizes:
        frames += framer.feed(stream[position : position + size])
        position += size
    frames += framer.feed(stream[position:])
    assert [frame.data for frame in frames] == [data, data]


@SETTINGS
@given(valid_message())
def test_valid_messages_from_the_trunk_are_forwarded_to_the_pbx(
    generated: Generated,
) -> None:
    data, fields = generated
    msg = parse_message(data, datagram=True)
    assume(msg.method not in ("ACK", "CANCEL"))
    core = make_core()
    core.receive(data, TRUNK_SOURCE, 0.0)
    out = core.datagrams_to_send()
    back = [o.data for o in out if o.target.port == TRUNK_SOURCE.port]
    onward = [o.data for o in out if o.target.port == 5070]
    if msg.max_forwards == 0:
        assert onward == [] and [data[:12] for data in back] == [b"SIP/2.0 483 "]
        return
    assert len(onward) == 1
    forwarded = parse_message(onward[0], datagram=True)
    assert forwarded.call_id == fields["call_id"]
    assert forwarded.wire.body == msg.wire.body
    assert len(forwarded.vias) == len(msg.vias) + 1
    assert forwarded.max_forwards == (msg.max_forwards or 71) - 1
