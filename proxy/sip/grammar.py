"""RFC 3261 header grammar the proxy needs: name-addr, SIP URIs, Via, CSeq, comma lists.

Every parser takes a latin-1 header value and the absolute offset of that value in the message, and
returns absolute spans, so an edit can replace exactly one part of one header.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, NamedTuple

from proxy.sip.errors import BadRequest

if TYPE_CHECKING:
    from proxy.sip.message import SipMessage

LWS: Final = r"(?:[ \t]*\r?\n)?[ \t]+"
SWS: Final = rf"(?:{LWS})?"
TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
QUOTED: Final = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
# received=::1 is an unbracketed IPv6address (RFC 3261)
IPV6: Final = r"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]+"
_DISPLAY_NAME: Final = re.compile(
    rf"{SWS}(?:(?P<quoted>{QUOTED})|(?P<tokens>{TOKEN}(?:{LWS}{TOKEN})*))?{SWS}<"
)
_URI_IN_BRACKETS: Final = re.compile(r"<(?P<uri>[^<>\s\"]+)>")
_PARAM_VALUE: Final = rf"{IPV6}|{TOKEN}|{QUOTED}|\[[0-9A-Fa-f:.]+\]"
_PARAM: Final = re.compile(
    rf"{SWS};{SWS}(?P<name>{TOKEN})(?:{SWS}={SWS}(?P<value>{_PARAM_VALUE}))?"
)
_ADDR_SPEC: Final = re.compile(r"(?P<uri>[A-Za-z][A-Za-z0-9+\-.]*:[^\s;,<>\"]+)")
_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")

MAGIC_COOKIE: Final = "z9hG4bK"


class NameAddr(NamedTuple):
    """A From/To/Contact/Route value. Spans are absolute offsets in the message."""

    start: int
    end: int
    display_name: str | None
    uri: str
    uri_start: int
    uri_end: int
    bracketed: bool
    params: dict[str, str | None]
    params_start: int  # where the header parameters (;tag=...) begin

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


_new: Final = tuple.__new__  # a NamedTuple's own __new__ is a Python function: skip it

# `;name=value;name` with no whitespace and no quoted value (what _SIMPLE_PARAMS matches).
_SIMPLE_PARAM_TEXT: Final = rf"(?:;{TOKEN}(?:=(?:{IPV6}|{TOKEN}|\[[0-9A-Fa-f:.]+\]))?)*"
# The usual forms, whole: `"Name" <uri>;params`, `Name <uri>;params`, `<uri>;params` and an
# addr-spec `sip:a@b;params`, without folding or odd whitespace. When one matches the whole value
# the answer is the one `_parse_name_addr_general` gives (a property test holds them together).
# The same languages as QUOTED and _SIMPLE_PARAM_TEXT, written for the regex engine's speed
# (the quoted string unrolled, a token value tried before an IPv6 one): only ever fullmatch'ed.
_QUOTED_UNROLLED: Final = r'"[^"\\\r\n]*(?:\\[\x00-\x09\x0b\x0c\x0e-\x7f][^"\\\r\n]*)*"'
_USUAL_PARAMS: Final = rf"(?:;{TOKEN}(?:=(?:{TOKEN}|{IPV6}|\[[0-9A-Fa-f:.]+\]))?)*"
# groups: quoted display name, token display name, URI, params
_USUAL_NAME_ADDR: Final = re.compile(
    rf"(?:({_QUOTED_UNROLLED})[ \t]*|({TOKEN}(?:[ \t]+{TOKEN})*)[ \t]*)?"
    rf"<([^<>\s\"]+)>({_USUAL_PARAMS})"
)
_USUAL_ADDR_SPEC: Final = re.compile(  # groups: URI, params
    rf"([A-Za-z][A-Za-z0-9+\-.]*:[^\s;,<>\"?]+)({_USUAL_PARAMS})"
)


def parse_name_addr(value: str, offset: int = 0, end: int | None = None) -> NameAddr:
    """Parse `name-addr / addr-spec` followed by header params, strictly (RFC 4475 3.1.2)."""
    stop = len(value) if end is None else end
    bracketed = "<" in value
    usual = (_USUAL_NAME_ADDR if bracketed else _USUAL_ADDR_SPEC).fullmatch(value, 0, stop)
    if usual is None:
        return _parse_name_addr_general(value, offset, stop)
    if bracketed:
        quoted, tokens, uri, params = usual.groups()
        display = quoted or tokens
        uri_start = usual.start(3)
    else:
        uri, params = usual.groups()
        display = None
        uri_start = 0
    uri_end = uri_start + len(uri)
    return _new(
        NameAddr,
        (
            offset,
            offset + stop,
            display,
            uri,
            offset + uri_start,
            offset + uri_end,
            bracketed,
            _split_simple_params(params) if params else {},
            offset + uri_end + bracketed,  # the params start after the > of a <URI>
        ),
    )


def _parse_name_addr_general(value: str, offset: int, stop: int) -> NameAddr:
    """Any form RFC 3261 allows (LWS and folding anywhere, quoted pairs, odd params)."""
    position = 0
    display: str | None = None
    match = _DISPLAY_NAME.match(value, 0, stop)
    if match is not None:
        display = match.group("quoted") or match.group("tokens")
        uri_match = _URI_IN_BRACKETS.match(value, match.end() - 1, stop)
        if uri_match is None:
            raise BadRequest(f"malformed <URI> in {value[:80]!r}")
        uri, uri_start, uri_end = (
            uri_match.group("uri"),
            uri_match.start("uri"),
            uri_match.end("uri"),
        )
        position = uri_match.end()
        bracketed = True
    else:
        leading = re.match(SWS, value[:stop])
        skip = leading.end() if leading else 0
        spec = _ADDR_SPEC.match(value, skip, stop)
        if spec is None:
            raise BadRequest(f"not a name-addr or addr-spec: {value[:80]!r}")
        uri, uri_start, uri_end = spec.group("uri"), spec.start("uri"), spec.end("uri")
        if "?" in uri:
            raise BadRequest("an addr-spec with URI headers must be enclosed in <>")
        position = spec.end()
        bracketed = False
    params_start = position
    params, position = _parse_params(value, position, stop)
    trailing = value[position:stop].strip(" \t\r\n")
    if trailing:
        raise BadRequest(f"unexpected text after address: {trailing[:40]!r}")
    return NameAddr(
        start=offset,
        end=offset + stop,
        display_name=display,
        uri=uri,
        uri_start=offset + uri_start,
        uri_end=offset + uri_end,
        bracketed=bracketed,
        params=params,
        params_start=offset + params_start,
    )


# The common case, `;name=value;name` with no whitespace and no quoted value, in one match. Only
# used when it covers the whole rest of the value; the general loop below decides otherwise.
_SIMPLE_PARAMS: Final = re.compile(_SIMPLE_PARAM_TEXT)


def _parse_params(value: str, position: int, stop: int) -> tuple[dict[str, str | None], int]:
    simple = _SIMPLE_PARAMS.match(value, position, stop)
    if simple is not None and simple.end() == stop:
        return _split_simple_params(value[position:stop]), stop
    return parse_params_general(value, position, stop)


def parse_params_general(
    value: str, position: int, stop: int
) -> tuple[dict[str, str | None], int]:
    """`;name[=value]` parameters one at a time, LWS allowed (RFC 3261 25.1); stops at the
    first text that is not one and says where."""
    params: dict[str, str | None] = {}
    while True:
        match = _PARAM.match(value, position, stop)
        if match is None:
            return params, position
        params[match.group("name").lower()] = match.group("value")
        position = match.end()


def _split_simple_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";")[1:]:
        name, sep, param_value = item.partition("=")
        params[name.lower()] = param_value if sep else None
    return params


def split_comma_values(value: str, stop: int | None = None) -> list[tuple[int, int]]:
    """Spans (relative) of the comma-separated values of a header, ignoring commas in quotes/<>."""
    end = len(value) if stop is None else stop
    if '"' in value:
        return _split_quoted(value, end)
    # No quotes: a comma separates unless the last bracket before it opened a <URI>. Each
    # stretch between commas is searched once (linear in the value, however many commas).
    spans: list[tuple[int, int]] = []
    start = scanned = 0
    in_brackets = False
    while (comma := value.find(",", scanned, end)) >= 0:
        opened, closed = value.rfind("<", scanned, comma), value.rfind(">", scanned, comma)
        if opened != closed:  # at least one of them in this stretch
            in_brackets = opened > closed
        scanned = comma + 1
        if not in_brackets:
            spans.append(_trimmed(value, start, comma))
            start = scanned
    spans.append(_trimmed(value, start, end))
    return spans


def _split_quoted(value: str, end: int) -> list[tuple[int, int]]:
    """`split_comma_values` one character at a time, for values with quoted strings."""
    spans: list[tuple[int, int]] = []
    start = 0
    in_quotes = in_brackets = escaped = False
    for index in range(end):
        char = value[index]
        if escaped:
            escaped = False
        elif in_quotes:
            if char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_brackets = True
        elif char == ">":
            in_brackets = False
        elif char == "," and not in_brackets:
            spans.append(_trimmed(value, start, index))
            start = index + 1
    if in_quotes:
        raise BadRequest("unbalanced quotes in header value")
    spans.append(_trimmed(value, start, end))
    return spans


def _trimmed(value: str, start: int, end: int) -> tuple[int, int]:
    while start < end and value[start] in " \t\r\n":
        start += 1
    while end > start and value[end - 1] in " \t\r\n":
        end -= 1
    return start, end


class SipUri(NamedTuple):
    scheme: str  # lower case: sip, sips, tel, ...
    user: str | None
    host: str
    port: int | None
    params: dict[str, str | None]
    has_headers: bool


_SIP_URI: Final = re.compile(
    r"(?P<scheme>sips?):(?:(?P<user>[^@:]*)(?::[^@]*)?@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<params>(?:;[^;?]*)*)(?P<headers>\?.*)?$",
    re.IGNORECASE,
)


def uri_scheme(uri: str) -> str:
    match = _SCHEME.match(uri)
    if match is None:
        raise BadRequest(f"URI without scheme: {uri[:60]!r}")
    return match.group(1).lower()


# The usual SIP URI, whole: lower-case scheme, no password, no `?headers`, one `@` at most (the
# user's). When it matches, the answer is `_SIP_URI`'s (a property test holds them together).
# Not Final: tests/proxy/sip/test_fast_paths.py swaps it out to reach the general path.
_USUAL_SIP_URI = re.compile(
    r"(sips?):(?:([^@:;?]*)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?"
    r"((?:;[^;?@]*)*)"
)


def parse_sip_uri(uri: str) -> SipUri:
    """Parse a sip:/sips: URI; tel: and other schemes give host '' and the opaque part as user."""
    usual = _USUAL_SIP_URI.fullmatch(uri)
    if usual is not None:
        scheme, user, host, port_text, param_text = usual.groups()
        port = int(port_text) if port_text else None
        if port is None or 0 < port < 65536:  # else refused below
            params = _uri_params(param_text) if param_text else {}
            return _new(SipUri, (scheme, user, host.lower(), port, params, False))
    scheme = uri_scheme(uri)
    if scheme not in ("sip", "sips"):
        opaque = uri[len(scheme) + 1 :]
        number, _, rest = opaque.partition(";")
        params = _uri_params(";" + rest) if rest else {}
        return _new(SipUri, (scheme, number, "", None, params, "?" in opaque))
    match = _SIP_URI.match(uri)
    if match is None:
        raise BadRequest(f"malformed SIP URI: {uri[:80]!r}")
    port = int(match.group("port")) if match.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise BadRequest(f"port out of range in {uri[:80]!r}")
    user, host, param_text, headers = match.group("user", "host", "params", "headers")
    params = _uri_params(param_text) if param_text else {}
    return _new(SipUri, (scheme, user, host.lower(), port, params, headers is not None))


def _uri_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";")[1:]:
        name, sep, val = item.partition("=")
        params[name.strip().lower()] = val if sep else None
    return params


class Via(NamedTuple):
    """One Via value. `start`/`end` are absolute offsets of this value (not the whole header)."""

    header_index: int  # index of the header line in SipMessage.headers
    start: int
    end: int
    transport: str  # upper case: UDP, TCP, ...
    host: str
    port: int | None
    params: dict[str, str | None]
    params_end: int  # absolute offset after the last parameter, where new ones are added

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


_VIA: Final = re.compile(
    rf"SIP{SWS}/{SWS}(?P<version>[0-9.]+){SWS}/{SWS}(?P<transport>{TOKEN}){LWS}"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"
    rf"(?:{SWS}:{SWS}(?P<port>[0-9]{{1,5}}))?",
    re.IGNORECASE,
)
# The usual Via value, whole: `SIP/2.0/UDP host:port;params`, single spaces, simple params. When
# it matches, the answer is the general parser's (a property test holds them together).
# Not Final: tests/proxy/sip/test_fast_paths.py swaps it out to reach the general path.
_USUAL_VIA = re.compile(
    rf"SIP/2\.0/({TOKEN}) (\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{{1,5}}))?"
    rf"({_USUAL_PARAMS})"
)


def parse_via_value(value: str, offset: int, header_index: int) -> Via:
    usual = _USUAL_VIA.fullmatch(value)
    if usual is not None:
        transport, host, port_text, param_text = usual.groups()
        params = _split_simple_params(param_text) if param_text else {}
        position = len(value)
    else:
        match = _VIA.match(value)
        if match is None or match.group("version") != "2.0":
            raise BadRequest(f"malformed Via: {value[:80]!r}")
        params, position = _parse_params(value, match.end(), len(value))
        if value[position:].strip(" \t\r\n"):
            raise BadRequest(f"unexpected text in Via: {value[position : position + 40]!r}")
        transport, host, port_text = match.group("transport", "host", "port")
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port < 65536:
        raise BadRequest("Via port out of range")
    if "rport" in params or "ttl" in params:
        _check_via_numbers(params)
    return _new(
        Via,
        (
            header_index,
            offset,
            offset + len(value),
            transport.upper(),
            host.lower(),
            port,
            params,
            offset + position,
        ),
    )


def _check_via_numbers(params: dict[str, str | None]) -> None:
    """rport (RFC 3581) is a port; ttl (RFC 3261 20.42) is 0-255."""
    rport = params.get("rport")
    if rport is not None and bounded_number(rport, "Via rport", 65535) == 0:
        raise BadRequest("Via rport out of range")
    ttl = params.get("ttl")
    if ttl is not None:
        bounded_number(ttl, "Via ttl", 255)


_CSEQ: Final = re.compile(rf"(?P<number>[0-9]+){LWS}(?P<method>{TOKEN})$")
CSEQ_LIMIT: Final = 2**31 - 1  # RFC 3261 8.1.1.5: the sequence number must be less than 2**31


def parse_cseq(value: str) -> tuple[int, str]:
    number, _, method = value.partition(" ")
    # The usual `4711 INVITE`: short ASCII digits, one space, letters (a token, RFC 3261 25.1).
    if number.isdigit() and len(number) < 10 and method.isalpha() and value.isascii():
        return int(number), method
    match = _CSEQ.match(value)
    if match is None:
        raise BadRequest(f"malformed CSeq: {value[:60]!r}")
    try:
        number_value = bounded_number(match.group("number"), "CSeq number", CSEQ_LIMIT)
    except BadRequest:
        raise BadRequest("CSeq number out of range (must be < 2**31)") from None
    return number_value, match.group("method")


# ----------------------------------------------------------------------------- numbers
_ASCII_DIGITS: Final = re.compile(r"[0-9]+")
DELTA_SECONDS_LIMIT: Final = 2**32 - 1  # RFC 3261 25.1: delta-seconds; 2**32-1 is the usual bound
# Numeric header fields nobody in the proxy reads, but which it forwards: bounded so that a peer
# behind it is not handed a 5,000-digit number. A value that does not start with digits (RFC 4475
# baddate's date in Expires) is left alone: RFC 3261 20.19 says to treat it as a default.
NUMERIC_FIELDS: Final[dict[str, int]] = {
    "expires": DELTA_SECONDS_LIMIT,
    "min-expires": DELTA_SECONDS_LIMIT,
    "retry-after": DELTA_SECONDS_LIMIT,
    "session-expires": DELTA_SECONDS_LIMIT,  # RFC 4028
    "min-se": DELTA_SECONDS_LIMIT,
    "rseq": DELTA_SECONDS_LIMIT,  # RFC 3262: 1 to 2**32-1
}


def bounded_number(text: str, label: str, maximum: int) -> int:
    """`text` as an ASCII decimal number not above `maximum`, else 400. The length is checked
    before `int()`: Python refuses to convert more than 4,300 digits (ValueError), and a long
    run of digits is refused long before that."""
    digits = len(str(maximum))
    if len(text) <= digits and text.isascii() and text.isdigit():  # the common case
        number = int(text)
        if number <= maximum:
            return number
    if _ASCII_DIGITS.fullmatch(text) is None:
        raise BadRequest(f"invalid {label} {text[:20]!r}")
    significant = text.lstrip("0") or "0"
    if len(significant) > digits or int(significant) > maximum:
        raise BadRequest(f"{label} {text[:20]!r} exceeds {maximum}")
    return int(significant)


assert min(NUMERIC_FIELDS.values()) >= 10**9  # what the usual case below relies on


def check_numeric_fields(wire: SipMessage) -> None:
    present = wire.names()
    for name, maximum in NUMERIC_FIELDS.items():
        if name not in present:
            continue
        for position in wire.positions(name):
            value = wire.value_at(position)
            if value.isdigit() and len(value) < 10 and value.isascii():  # the usual case
                continue  # below 10**9, so below every maximum here
            leading = _ASCII_DIGITS.match(value)
            if leading is not None:
                bounded_number(leading.group(), name, maximum)
