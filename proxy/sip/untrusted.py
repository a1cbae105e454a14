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
from dataclasses import dataclass

GLANCE_BYTES = 4096  # a normal request has its dialog headers well inside this
GLANCE_LINES = 48
UNTRUSTED_MODES = ("reply", "drop")

# User-Agent substrings of SIP scanners and toll-fraud tools (lower case; matched anywhere).
SCANNER_AGENTS: tuple[str, ...] = (
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

_COMPACT = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}
_WANTED = (b"via", b"from", b"to", b"call-id", b"cseq", b"user-agent")
_METHOD = re.compile(rb"([A-Za-z0-9\-.!%*_+`'~]{1,32}) ")
# A bare CR, NUL or other control octet (HT and folding aside): never reflected in a reply.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_FOLD = re.compile(rb"\r\n[ \t]")
_TAG = re.compile(rb";[ \t]*tag[ \t]*=", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Glance:
    """What a bounded scan found: the method (None for a response or garbage) and the first
    value of each wanted header, as the sender's bytes (folding kept)."""

    method: str | None
    fields: dict[bytes, bytes]
    clean: bool = True  # no control octets in the fields a reply would copy

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
    if not seen.answerable:
        return None
    fields = seen.fields
    via = _first_value(fields[b"via"])
    to = fields[b"to"]
    if _TAG.search(to) is None:
        # Deterministic, so a retransmitted request gets the very same answer (RFC 3261 8.2.6.2).
        digest = hashlib.sha1(via + fields[b"from"] + fields[b"call-id"] + fields[b"cseq"])
        to += b";tag=cp" + digest.hexdigest()[:10].encode()
    response = b"".join(
        (
            b"SIP/2.0 403 Forbidden\r\nVia: ", via,
            b"\r\nFrom: ", fields[b"from"],
            b"\r\nTo: ", to,
            b"\r\nCall-ID: ", fields[b"call-id"],
            b"\r\nCSeq: ", fields[b"cseq"],
            b"\r\nContent-Length: 0\r\n\r\n",
        )
    )
    return response if len(response) <= request_size else None


def _first_value(via: bytes) -> bytes:
    """Only the top Via value (RFC 3261 8.2.6.2 copies the Via the UAS must answer along; the
    rest of a comma-joined stack is the sender's own business)."""
    comma = via.find(b",")
    if comma < 0 or b'"' in via[:comma]:
        return via
    return via[:comma].rstrip()
