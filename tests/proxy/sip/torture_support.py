"""The RFC 4475 torture messages, what the proxy must do with each, and byte-level checks of it.

Shared by the sans-IO torture tests and the live (real process) torture test. The expectations are
the README table of `../shared/sip-torture/` (copied with the messages into `tests/data/rfc4475/`),
with the one choice made where the table allows several answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from proxy.sip.grammar import parse_name_addr
from proxy.sip.message import Header, SipMessage, split_message
from proxy.sip.parse import parse_message

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "rfc4475"
SHARED_DIR = Path("/work/shared/sip-torture/rfc4475")

NUMBER = "+3228880001"  # FixedPolicy's number in support.py, and user 1001's in rules/example.yaml


class Kind(Enum):
    FORWARD = "forward"  # the request reaches the other side, untouched headers byte-identical
    REPLY = "reply"  # a stateless error response back to the sender, nothing forwarded
    DROP = "drop"  # nothing sent anywhere
    RELAY = "relay"  # a response: relayed upstream when its top Via is ours
    HOP_BY_HOP = "hop-by-hop"  # a 100 response: accepted (stops retransmission), never relayed
    BAD_RESPONSE = "bad response"  # a response that cannot be parsed: dropped, even when ours
    CLOSE = "reply and close"  # stream only: 400 on the connection, then it is closed
    WAIT = "wait"  # stream only: a body still to come, nothing answered until the idle timeout
    FORWARD_BOTH = "forward both"  # stream only: two messages in a row, each forwarded


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    status: int = 0


FORWARD = Outcome(Kind.FORWARD)
DROP = Outcome(Kind.DROP)


def reply(status: int) -> Outcome:
    return Outcome(Kind.REPLY, status)


# What the proxy does with each file received as a datagram (the README's table, one choice a row).
EXPECTED: dict[str, Outcome] = {
    # 3.1.1 valid messages
    "wsinv": FORWARD,
    "intmeth": FORWARD,
    "esc01": FORWARD,
    "escnull": FORWARD,
    "esc02": FORWARD,
    "lwsdisp": FORWARD,
    "longreq": FORWARD,
    "dblreq": FORWARD,
    "semiuri": FORWARD,
    "transports": FORWARD,
    "mpart01": FORWARD,
    "unreason": Outcome(Kind.RELAY),
    "noreason": Outcome(Kind.HOP_BY_HOP),
    # 3.1.2 invalid messages
    "badinv01": reply(400),
    "clerr": reply(400),
    "scalar02": reply(400),
    "scalarlg": Outcome(Kind.BAD_RESPONSE),
    "quotbal": reply(400),
    "ltgtruri": reply(400),
    "lwsruri": reply(400),
    "lwsstart": reply(400),
    "trws": reply(400),
    "escruri": reply(400),
    "baddate": FORWARD,
    "regbadct": reply(400),
    "badaspec": reply(400),
    "baddn": reply(400),
    "badvers": reply(505),
    "mismatch01": reply(400),
    "mismatch02": reply(400),
    "ncl": reply(400),
    "bigcode": Outcome(Kind.BAD_RESPONSE),
    # 3.2 transaction layer
    "badbranch": FORWARD,
    # 3.3 application layer
    "insuf": reply(400),
    "unkscm": reply(416),
    "novelsc": reply(416),
    "unksm2": FORWARD,
    "bext01": reply(420),
    "invut": FORWARD,
    "regaut01": FORWARD,
    "multi01": reply(400),
    "mcl01": reply(400),
    "bcast": DROP,
    "zeromf": reply(483),
    "cparam01": FORWARD,
    "cparam02": FORWARD,
    "regescrt": FORWARD,
    "sdp01": FORWARD,
    "inv2543": FORWARD,
}

# Over a stream (TCP) framing comes first (RFC 3261 18.3): where that changes the outcome.
STREAM_EXPECTED: dict[str, Outcome] = {
    **EXPECTED,
    "inv2543": Outcome(Kind.CLOSE, 400),  # no Content-Length: required on a stream
    "ncl": Outcome(Kind.CLOSE, 400),  # negative Content-Length: the stream cannot be framed
    "mcl01": Outcome(Kind.CLOSE, 400),  # two Content-Length values: idem
    "clerr": Outcome(Kind.WAIT),  # Content-Length 9999: wait for the rest, close when idle
    # On a stream the "trailing octets" are the next message: an INVITE (Content-Length 150 of
    # its 155 body octets) forwarded, then "C\r\n\r\n" that cannot be framed: connection closed.
    "dblreq": Outcome(Kind.FORWARD_BOTH),
}

RESPONSES = tuple(name for name, outcome in EXPECTED.items() if outcome.kind in (
    Kind.RELAY, Kind.HOP_BY_HOP, Kind.BAD_RESPONSE))
REQUESTS = tuple(name for name in EXPECTED if name not in RESPONSES and name != "bcast")
NAMES = tuple(sorted(EXPECTED))


def load(name: str) -> bytes:
    return (DATA_DIR / f"{name}.dat").read_bytes()


# ----------------------------------------------------------------------------- the README table
@dataclass(frozen=True, slots=True)
class TableRow:
    names: tuple[str, ...]
    category: str
    must: str


def readme_table(readme: Path = DATA_DIR / "README.md") -> list[TableRow]:
    rows: list[TableRow] = []
    for line in readme.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("file", "") or set(cells[0]) <= {"-", " "}:
            continue
        names = tuple(name.strip() for name in cells[0].split(","))
        rows.append(TableRow(names, cells[1], cells[2]))
    return rows


# ----------------------------------------------------------------------------- message helpers
def wire_of(data: bytes) -> SipMessage:
    """The message as the proxy frames it (datagram): body cut at Content-Length."""
    try:
        return parse_message(data, datagram=True).wire
    except Exception:
        return split_message(data)


def header_line(wire: SipMessage, header: Header) -> bytes:
    return wire.raw[header.start : header.end]


def status_of(data: bytes) -> int:
    assert data.startswith(b"SIP/2.0 "), data[:60]
    return int(data[8:11])


_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def call_id_of(data: bytes) -> bytes | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _CALL_ID.search(head)
    return match.group(1) if match else None


def start_line(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


_OUR_VIA = re.compile(
    rb"Via: SIP/2\.0/(UDP|TCP) 127\.0\.0\.1:\d+;branch=z9hG4bKcp[0-9a-f]+;rport\r\n"
)
_OUR_RECORD_ROUTE = re.compile(
    rb"Record-Route: <sip:127\.0\.0\.1:\d+(;transport=tcp)?;lr[^>]*>\r\n"
)
_IDENTITY_HEADERS = ("p-asserted-identity", "p-preferred-identity")
_PARAM_ADDED = re.compile(rb";received=127\.0\.0\.1")
_RPORT_FILLED = re.compile(rb";rport=\d+")


def check_forwarded(
    original: bytes, forwarded: bytes, *, rewritten_identity: bool, number: str = NUMBER
) -> None:
    """`forwarded` is `original` (as framed) with only what a proxy must change changed:
    our Via on top, received/rport on the sender's Via, Max-Forwards - 1 (or added at 70), our
    Record-Route(s); for a rewritten outbound INVITE also From, P-Asserted-Identity (added),
    P-Preferred-Identity (removed). Every other header line, the start line and the body are
    byte-identical, in the same order, and no octet after the message is forwarded."""
    before = wire_of(original)
    after = split_message(forwarded)
    assert after.start_line == before.start_line
    assert after.body == before.body
    assert len(forwarded) == after.body_start + len(before.body), "octets after the body"
    lines = [header_line(after, header) for header in after.headers]
    assert _OUR_VIA.fullmatch(lines[0]), lines[0]
    kept = [
        (header, line)
        for header, line in zip(after.headers[1:], lines[1:], strict=True)
        if not _OUR_RECORD_ROUTE.fullmatch(line)
        and not (rewritten_identity and header.name == "p-asserted-identity")
    ]
    originals = [
        header
        for header in before.headers
        if not (rewritten_identity and header.name in _IDENTITY_HEADERS)
    ]
    if before.get("max-forwards") is None:
        added = kept.pop()
        assert added[1] == b"Max-Forwards: 70\r\n"
    assert [h.name for h, _ in kept] == [h.name for h in originals]
    first_via = next(index for index, header in enumerate(originals) if header.name == "via")
    for index, (original_header, (header, line)) in enumerate(zip(originals, kept, strict=True)):
        before_line = header_line(before, original_header)
        if index == first_via:
            # the sender's Via may get received= and rport=<port> (RFC 3261 18.2.1, RFC 3581)
            restored = _RPORT_FILLED.sub(b";rport", _PARAM_ADDED.sub(b"", line, count=1), count=1)
            assert restored == before_line, (line, before_line)
        elif header.name == "max-forwards":
            expected = str(int(original_header.value) - 1).encode()
            assert after.raw[header.value_start : header.value_end] == expected
            assert line.replace(expected, original_header.value.encode(), 1) == before_line
        elif rewritten_identity and header.name == "from":
            assert number.encode() in line, line
            tag = parse_message(original, datagram=True).from_addr.tag
            if tag is None:  # RFC 2543: no From tag, and the proxy must not invent one
                assert b"tag=" not in line, line
            else:  # the PBX's parameters as it wrote them (folding, blanks): the same tag
                value = after.raw[header.value_start : header.value_end].decode("latin-1")
                assert parse_name_addr(value).tag == tag, line
        else:
            assert line == before_line, (line, before_line)
    if rewritten_identity:
        pai = [line for header, line in zip(after.headers, lines, strict=True)
               if header.name == "p-asserted-identity"]
        assert len(pai) == 1 and number.encode() in pai[0], pai


def check_reply(original: bytes, response: bytes, status: int) -> None:
    """A stateless error answer: status line, then the request's Via, From, Call-ID, CSeq lines
    copied byte for byte (RFC 3261 8.2.6.2), a To with a tag, Content-Length 0."""
    assert status_of(response) == status, start_line(response)
    request = wire_of(original)
    answer = split_message(response)
    for name in ("via", "from", "call-id", "cseq"):
        expected = [header_line(request, header) for header in request.get_all(name)]
        got = [header_line(answer, header) for header in answer.get_all(name)]
        assert got == [line if line.endswith(b"\n") else line + b"\r\n" for line in expected], name
    content_length = answer.get("content-length")
    assert content_length is not None and content_length.value == "0"
    assert answer.body == b""


def rewritten(data: bytes, *, from_pbx: bool) -> bool:
    """Whether the proxy must rewrite the caller ID: an outbound INVITE, a new call's or one
    claiming a dialog that never went through us (a To tag, but no Route of ours: none of the
    corpus has one), whose caller ID is decided as a new call's."""
    msg = parse_message(data, datagram=True)
    return from_pbx and msg.method == "INVITE"


# ----------------------------------------------------------------------------- responses
def request_for(response: bytes, via: bytes, *, contact_port: int) -> bytes:
    """The request a torture response answers: same From, To without tag, Call-ID, CSeq; sent by
    whoever owns `via` (a whole `Via: ...\\r\\n` line)."""
    wire = split_message(response)

    def value(name: str) -> str:
        header = wire.get(name)
        assert header is not None, name
        return header.value

    number_text, method = value("cseq").split()
    number = int(number_text) if int(number_text) < 2**31 else 1
    to = re.sub(r";tag=[^;]*", "", value("to"))
    target = re.search(r"sips?:[^>;]+", to)
    assert target is not None
    return (
        f"{method} {target.group()} SIP/2.0\r\n".encode()
        + via
        + (
            f"Max-Forwards: 70\r\nFrom: {value('from')}\r\nTo: {to}\r\n"
            f"Call-ID: {value('call-id')}\r\nCSeq: {number} {method}\r\n"
            f"Contact: <sip:peer@127.0.0.1:{contact_port}>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )


def via_lines(data: bytes) -> list[bytes]:
    wire = split_message(data)
    return [header_line(wire, header) for header in wire.get_all("via")]


def with_vias(response: bytes, vias: list[bytes]) -> bytes:
    """`response` with its Via lines replaced by `vias` (where its first Via was); all else kept."""
    wire = split_message(response)
    own = wire.get_all("via")
    assert own, "a response without Via"
    pieces = [response[: own[0].start], *vias]
    position = own[0].start
    for header in own:
        pieces.append(response[position : header.start])
        position = header.end
    pieces.append(response[position:])
    return b"".join(pieces)


def without_top_via(response: bytes) -> bytes:
    wire = split_message(response)
    top = wire.headers[0]
    assert top.name == "via"
    return response[: top.start] + response[top.end :]
