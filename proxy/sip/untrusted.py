"""Trust before work (issue 7): a message from a source that is neither the PBX, a trunk nor a
trusted network is judged from its first line and a bounded scan of its first header bytes,
never parsed. The answer is a short 403 carrying only what RFC 3261 8.2.6.2 requires (the top
Via, From, To with a tag, Call-ID, CSeq), never larger than the request, or nothing at all.

Pure functions on bytes; no state. The scan looks at most `GLANCE_BYTES` octets and
`GLANCE_LINES` lines, so a 64 KB datagram with 4,600 Via lines costs what a short one does.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, NamedTuple

from proxy.sip.errors import BadRequest
from proxy.sip.grammar import MAGIC_COOKIE, Via, parse_cseq, parse_name_addr, parse_via_value
from proxy.sip.responses import (
    OWN_TO_TAG_LENGTH,
    OWN_TO_TAG_PREFIX,
    SERVER_NAME,
    own_to_tag,
    tag_after_uri,
)
from proxy.sip.transactions import OUR_BRANCH_PREFIX
from proxy.sip.values import FrozenValue

GLANCE_BYTES: Final = 4096  # a normal request has its dialog headers well inside this
GLANCE_LINES: Final = 48
UNTRUSTED_MODES: Final = ("reply", "drop")

# User-Agent substrings of SIP scanners and toll-fraud tools (lower case; matched anywhere).
SCANNER_AGENTS: Final[tuple[str, ...]] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sundayddr",
    "iwar",
    "sip-scan",
    "sipscan",
    "sipsak",
    "smap",
    "svcrack",
    "svwar",
    "pplsip",
    "siparator",
    "sip-scanner",
)

_COMPACT: Final = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}
_WANTED: Final = (b"via", b"from", b"to", b"call-id", b"cseq", b"user-agent")
_METHOD: Final = re.compile(rb"([A-Za-z0-9\-.!%*_+`'~]{1,32}) ")
# A bare CR, NUL or other control octet (HT and folding aside): never reflected in a reply.
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_FOLD: Final = re.compile(rb"\r\n[ \t]")
_TAG: Final = re.compile(rb";[ \t]*tag[ \t]*=", re.IGNORECASE)


class Glance(FrozenValue):
    """What a bounded scan found: the method (None for a response or garbage) and the first
    value of each wanted header, as the sender's bytes (folding kept)."""

    __match_args__ = ("method", "fields", "clean")
    __slots__ = __match_args__

    method: str | None
    fields: dict[bytes, bytes]
    clean: bool  # no control octets in the fields a reply would copy

    def __init__(self, method: str | None, fields: dict[bytes, bytes], clean: bool = True) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "clean", clean)

    @property
    def user_agent(self) -> str:
        return self.fields.get(b"user-agent", b"").decode("latin-1")

    @property
    def answerable(self) -> bool:
        return self.clean and self.method is not None and all(
            name in self.fields for name in (b"via", b"from", b"to", b"call-id", b"cseq")
        )


def glance(data: bytes) -> Glance:
    """The first line and the first of each wanted header, within the scan bound."""
    limit = min(len(data), GLANCE_BYTES)
    line_end = data.find(b"\n", 0, limit)
    if line_end < 0:
        return Glance(None, {})
    method_match = _METHOD.match(data, 0, line_end)
    method = None
    if method_match is not None and not data.startswith(b"SIP/"):
        method = method_match.group(1).decode("ascii")
    fields = _scan_fields(data, line_end + 1, limit)
    clean = not any(_CONTROL.search(_FOLD.sub(b" ", value)) for value in fields.values())
    return Glance(method, fields, clean)


def _scan_fields(data: bytes, position: int, limit: int) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    current: bytes | None = None  # the wanted field the previous line belonged to
    for _ in range(GLANCE_LINES):
        end = data.find(b"\n", position, limit)
        if end < 0:
            break
        line = data[position:end].rstrip(b"\r")
        position = end + 1
        if not line:
            break  # end of the headers
        if line[:1] in (b" ", b"\t"):  # folding (RFC 3261 7.3.1): part of the previous field
            if current is not None:
                fields[current] += b"\r\n" + line
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            break  # not a header line: stop judging here
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        current = None
        if key in _WANTED and key not in fields:
            fields[key] = value.strip()
            current = key
    return fields


def is_scanner(user_agent: str) -> bool:
    lowered = user_agent.lower()
    return any(agent in lowered for agent in SCANNER_AGENTS)


def short_forbidden(seen: Glance, request_size: int) -> bytes | None:
    """The 403 for an untrusted request, or None when it would be larger than the request
    (no amplification, issue 7) or when the request cannot be answered."""
    response = short_response(seen, b"403 Forbidden")
    return response if response is not None and len(response) <= request_size else None


def short_response(seen: Glance, status: bytes) -> bytes | None:
    """An answer (`status`: code and reason) built from a glance, for a request no parse can
    answer, or None when the glance cannot: RFC 3261 8.2.6.2's Via, From, To (with a tag of
    ours), Call-ID and CSeq, as the sender wrote them."""
    if not seen.answerable:
        return None
    fields = seen.fields
    via = _first_value(fields[b"via"])
    to = fields[b"to"]
    if _TAG.search(to) is None:
        # Deterministic, so a retransmitted request gets the very same answer (RFC 3261 8.2.6.2).
        digest = hashlib.sha1(via + fields[b"from"] + fields[b"call-id"] + fields[b"cseq"])
        to += b";tag=cp" + digest.hexdigest()[:10].encode()
    return b"".join(
        (
            b"SIP/2.0 ", status, b"\r\nVia: ", via,
            b"\r\nFrom: ", fields[b"from"],
            b"\r\nTo: ", to,
            b"\r\nCall-ID: ", fields[b"call-id"],
            b"\r\nCSeq: ", fields[b"cseq"],
            b"\r\nContent-Length: 0\r\n\r\n",
        )
    )


def _first_value(via: bytes) -> bytes:
    """Only the top Via value (RFC 3261 8.2.6.2 copies the Via the UAS must answer along; the
    rest of a comma-joined stack is the sender's own business)."""
    comma = via.find(b",")
    if comma < 0 or b'"' in via[:comma]:
        return via
    return via[:comma].rstrip()


# ----------------------------------------------------------------------------- shed at a glance
# While the core sheds load (issue 6), a new INVITE from the PBX or a trunk is answered 503 from
# the wanted lines of its header block, found by one regex scan, before any parse. The glance
# only answers when it sees what the parser would (CRLF lines, no folding, one From/To/Call-ID/
# CSeq, an RFC 3261 top Via, no To tag); otherwise it says None and the core parses as usual.
_SHED_NAMES: Final = {
    b"via": "via", b"v": "via", b"from": "from", b"f": "from", b"to": "to", b"t": "to",
    b"call-id": "call-id", b"i": "call-id", b"cseq": "cseq",
}
# How they are usually spelled (one dict lookup per line); any other spelling of a line that
# starts like one of them is lowered and looked up again.
_SHED_SPELLINGS: Final = {
    spelling: canonical
    for name, canonical in _SHED_NAMES.items()
    for spelling in (name, name.upper(), name.capitalize(), b"Call-ID", b"CSeq")
    if spelling.lower() == name
}
_SHED_INITIALS: Final = b"VvFfTtCcIi"


class ShedGlance(NamedTuple):
    """What a 503 to a new INVITE copies (RFC 3261 8.2.6.2), as the sender's bytes, and the
    server-transaction key the INVITE would have (RFC 3261 17.2.3)."""

    key: tuple[str, str, str]  # branch, sent-by, "INVITE"
    via_lines: bytes  # every Via line, in order, with its CRLF
    from_line: bytes
    to_value: bytes
    call_id_cseq: bytes  # the Call-ID line, then the CSeq line
    call_id: str
    from_tag: str | None


def shed_glance(data: bytes) -> ShedGlance | None:
    """The glance of a new INVITE (see above), or None when only a parse can tell."""
    if not data.startswith(b"INVITE "):
        return None
    lines = _glance_lines(data)
    if lines is None:
        return None
    try:
        return _shed_fields(lines)
    except BadRequest:
        return None  # the parse will say what is wrong


_OWN_TAG_MARK: Final = b"tag=" + OWN_TO_TAG_PREFIX.encode()  # as `build_response` writes our To tag


class AckGlance(NamedTuple):
    """What tells an ACK of a final answer the proxy made itself (RFC 3261 17.1.1.3: it repeats
    the INVITE's Call-ID, From tag and top Via branch, and the To tag of that answer)."""

    key: tuple[str, str, str]  # the INVITE server transaction it would match (17.2.3)
    call_id: str
    from_tag: str | None
    to_tag: str


def own_ack_glance(data: bytes) -> AckGlance | None:
    """The glance of an ACK whose To tag looks like one of ours (`own_to_tag`: "cp" and 10 hex),
    or None: another ACK (the end-to-end ACK of a 2xx carries the callee's tag), or one only a
    parse can read. While shedding, each refused INVITE comes back as such an ACK; answered from
    a glance it costs a fraction of a parse (issue 6)."""
    if not data.startswith(b"ACK ") or _OWN_TAG_MARK not in data:
        return None
    lines = _glance_lines(data)
    if lines is None:
        return None
    try:
        return _ack_fields(lines)
    except BadRequest:
        return None


def _ack_fields(lines: dict[str, list[tuple[bytes, bytes]]]) -> AckGlance | None:
    vias = lines.get("via")
    singles = _single_lines(lines)
    if not vias or singles is None:
        return None
    (_, from_value), (_, to_value), (_, call_id), (_, cseq) = singles
    if parse_cseq(cseq.decode("latin-1"))[1] != "ACK":
        return None
    to_tag = _from_tag(to_value)
    if to_tag is None or len(to_tag) != OWN_TO_TAG_LENGTH or not _plain_call_id(call_id):
        return None
    key = _rfc3261_key(vias[0][1])
    if key is None:
        return None
    return AckGlance(key, call_id.decode("latin-1"), _from_tag(from_value), to_tag)


class TryingGlance(NamedTuple):
    """What matches a 100 Trying to our client transaction (RFC 3261 17.1.3: the top Via's
    branch and the CSeq method), and the top Via's host (one of ours, or it was not for us)."""

    branch: str
    method: str
    host: str


TRYING: Final = b"SIP/2.0 100 "  # how a 100 Trying's status line starts (RFC 3261 7.2)
# The Via, CSeq and Content-Length lines of a header block whose lines are CRLF-separated
# (RFC 3261 7.3.1: any case, compact forms, blanks before the colon).
_TRYING_LINES: Final = re.compile(
    rb"\r\n(via|v|cseq|content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE
)


def trying_glance(data: bytes) -> TryingGlance | None:
    """The glance of a 100 Trying with our branch on top, or None when only a parse can tell.

    A proxy never forwards a 100 (RFC 3261 16.7 step 5); to the client transaction it matches
    (17.1.3: top Via branch and CSeq method) it is a provisional response like any other:
    Proceeding, no more retransmissions (17.1.1.2, 17.1.2.2), and here Timer C armed and a
    pending CANCEL sent (9.1). So only that is read, by one regex scan: the top Via, which must
    be one value with our branch, the one CSeq, and the Content-Length, which must not promise
    more octets than arrived (18.3: such a response MUST be discarded), all in lines the parser
    would split the same way (CRLF only, no folding). The rest of its grammar (From, To,
    Call-ID, the other Vias) is not checked, since no byte of it goes anywhere: a 100 the full
    parse would refuse for them is absorbed here instead of dropped. A trunk sends one for
    every call, and a full parse of it cost as much as a 180's (issue 6)."""
    if not data.startswith(TRYING):
        return None
    end = _plain_header_end(data)
    if end < 0:
        return None
    stop = end + 2
    top_via: bytes | None = None
    cseq: bytes | None = None
    length: bytes | None = None
    for found in _TRYING_LINES.finditer(data, 0, stop):
        name = found.group(1).lower()
        if name == b"cseq":
            if cseq is not None:
                return None  # two: the parse refuses it
            cseq = found.group(2)
        elif name in (b"via", b"v"):
            if top_via is None:
                top_via = found.group(2)
        elif length is not None:
            return None  # two Content-Lengths: the parse refuses it
        else:
            length = found.group(2)
    if length is not None:
        digits = length.rstrip(b" \t")
        if not digits.isdigit() or len(digits) > 5 or int(digits) > len(data) - (end + 4):
            return None  # a truncated (or odd) length: the parse decides, and drops it
    if top_via is None or cseq is None:
        return None
    try:
        method = parse_cseq(cseq.rstrip(b" \t").decode("latin-1"))[1]
        via = _one_via(top_via.rstrip(b" \t"))
    except BadRequest:
        return None  # the parse will say what is wrong
    if via is None:
        return None
    branch = via.branch
    if branch is None or not branch.startswith(OUR_BRANCH_PREFIX):
        return None
    return TryingGlance(branch, method, via.host)


def _plain_header_end(data: bytes) -> int:
    """Where the blank line after the header block starts, or -1 when there is none or the
    parser might see the lines otherwise than CRLF-split: a bare CR or LF, or folding (RFC 3261
    7.3.1). What a glance needs before it reads lines the parser would read."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return -1
    stop = end + 2
    breaks = data.count(b"\r\n", 0, stop)
    if data.count(b"\n", 0, stop) != breaks or data.count(b"\r", 0, stop) != breaks:
        return -1  # a bare CR or LF: the parser's view of the lines may differ
    if data.find(b"\r\n ", 0, stop) >= 0 or data.find(b"\r\n\t", 0, stop) >= 0:
        return -1  # folding
    return end


def _glance_lines(data: bytes) -> dict[str, list[tuple[bytes, bytes]]] | None:
    """The Via, From, To, Call-ID and CSeq lines of a header block, as (line, value), or None
    when the parser might see the lines otherwise (`_plain_header_end`) or there is no end."""
    end = _plain_header_end(data)
    if end < 0:
        return None
    lines: dict[str, list[tuple[bytes, bytes]]] = {}
    first = data.find(b"\n") + 1  # the start line aside
    if first >= end:
        # The start line alone. (Compiled by mypyc, a bytes slice whose start passes its end
        # raises SystemError instead of giving b"": never slice so.)
        return lines
    spelled = _SHED_SPELLINGS.get
    for line in data[first:end].split(b"\r\n"):
        colon = line.find(b":")
        if colon <= 0:
            continue  # not a header line: the parse may refuse it, the 503 needs none of it
        name = spelled(line[:colon])
        if name is None:
            if line[:1] not in _SHED_INITIALS:
                continue
            name = _SHED_NAMES.get(line[:colon].rstrip(b" \t").lower())
            if name is None:
                continue
        lines.setdefault(name, []).append((line, line[colon + 1 :].strip(b" \t")))
    return lines


def _shed_fields(lines: dict[str, list[tuple[bytes, bytes]]]) -> ShedGlance | None:
    vias = lines.get("via")
    singles = _single_lines(lines)
    if not vias or singles is None:
        return None
    (from_line, from_value), (_, to_value), (call_id_line, call_id), (cseq_line, cseq) = singles
    if parse_cseq(cseq.decode("latin-1"))[1] != "INVITE" or b"tag" in to_value.lower():
        return None  # not an INVITE's CSeq, or maybe a To tag: in a dialog
    if not _plain_call_id(call_id):
        return None
    key = _rfc3261_key(vias[0][1])
    if key is None:
        return None
    return ShedGlance(
        key,
        b"".join([line + b"\r\n" for line, _ in vias]),
        from_line + b"\r\n",
        to_value,
        call_id_line + b"\r\n" + cseq_line + b"\r\n",
        call_id.decode("latin-1"),
        _from_tag(from_value),
    )


_Line = tuple[bytes, bytes]  # (the whole line, its value)


def _single_lines(
    lines: dict[str, list[_Line]],
) -> tuple[_Line, _Line, _Line, _Line] | None:
    """From, To, Call-ID and CSeq when each is there exactly once (RFC 3261 8.1.1), or None."""
    from_lines = lines.get("from")
    to_lines = lines.get("to")
    call_id_lines = lines.get("call-id")
    cseq_lines = lines.get("cseq")
    if from_lines is None or to_lines is None or call_id_lines is None or cseq_lines is None:
        return None
    if len(from_lines) != 1 or len(to_lines) != 1:
        return None
    if len(call_id_lines) != 1 or len(cseq_lines) != 1:
        return None
    return from_lines[0], to_lines[0], call_id_lines[0], cseq_lines[0]


def _plain_call_id(call_id: bytes) -> bool:
    """A Call-ID the parser reads as these very bytes: not empty, one word (RFC 3261 25.1)."""
    return bool(call_id) and b" " not in call_id and b"\t" not in call_id


def _one_via(top_via: bytes) -> Via | None:
    """The top Via value parsed, when it is one Via (no comma, no quote: else only the parse's
    split can tell where the first ends); BadRequest when it does not parse."""
    if b"," in top_via or b'"' in top_via:
        return None
    return parse_via_value(top_via.decode("latin-1"), 0, 0)


def _rfc3261_key(top_via: bytes) -> tuple[str, str, str] | None:
    """The INVITE server-transaction key (RFC 3261 17.2.3) of a top Via value that is one Via
    with an RFC 3261 branch, or None: RFC 2543 matching needs the dialog fields, and a comma or
    a quote needs the parse."""
    via = _one_via(top_via)
    if via is None:
        return None
    branch = via.branch or ""
    if not branch.startswith(MAGIC_COOKIE) or len(branch) == len(MAGIC_COOKIE):
        return None
    return (branch, via.sent_by, "INVITE")


def _from_tag(value: bytes) -> str | None:
    """The From tag as `build_response` reads it (after the URI), once the value parses."""
    parse_name_addr(value.decode("latin-1"))  # a From the parser would refuse: let it refuse
    return tag_after_uri(value)


def shed_response(seen: ShedGlance, retry_after: int) -> bytes:
    """503 + Retry-After (RFC 3261 21.5.4, 20.33), byte for byte what `build_response` makes of
    the parsed INVITE: our To tag, derived from Call-ID and From tag, so its ACK is known."""
    tag = own_to_tag(seen.call_id, seen.from_tag).encode()
    return b"".join(
        (
            b"SIP/2.0 503 Service Unavailable\r\n", seen.via_lines, seen.from_line,
            b"To: ", seen.to_value, b";tag=", tag, b"\r\n", seen.call_id_cseq,
            b"Retry-After: ", str(retry_after).encode(), b"\r\n",
            b"Server: ", SERVER_NAME, b"\r\nContent-Length: 0\r\n\r\n",
        )
    )
