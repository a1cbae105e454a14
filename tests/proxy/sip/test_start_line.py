"""The start line (RFC 3261 7.1, 7.2): the usual request and status lines are read without a
regex, and what that fast reading gives is what the regexes give, for every line, the refusals
included. The reference below is the regex-only reading the parser had before."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.sip import parse as parse_module
from proxy.sip.errors import BadRequest, SipError, VersionNotSupported
from proxy.sip.message import split_message

SETTINGS = settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def regex_reading(line: str) -> tuple[object, ...]:
    """The start line read by the regexes alone: (method, uri, version, status, reason), or
    the refusal's type, text and the method kept for it."""
    if line[:4].upper() == "SIP/":
        status = parse_module._STATUS_LINE.match(line)
        if status is None:
            return ("UnparseableMessage", f"malformed status line: {line[:60]!r}", None)
        return (None, "", "SIP/2.0", int(status.group("status")), status.group("reason"))
    match = parse_module._REQUEST_LINE.match(line)
    if match is None:
        found = parse_module._REQUEST_METHOD.match(line)
        method = found.group(1) if found is not None else None
        return ("BadRequest", f"malformed request line: {line[:80]!r}", method)
    version = match.group("version")
    if version != "SIP/2.0":
        if parse_module._SIP_VERSION.match(version):
            error: SipError = VersionNotSupported(f"SIP version {version} not supported")
        else:
            error = BadRequest(f"malformed SIP version {version[:20]!r}")
        return (type(error).__name__, str(error), match.group("method"))
    return (match.group("method"), match.group("uri"), version, 0, "")


def parser_reading(line: str) -> tuple[object, ...]:
    wire = split_message(f"{line}\r\nX: y\r\n\r\n".encode("latin-1"))
    try:
        parse_module._parse_start_line(wire)
    except SipError as error:
        return (type(error).__name__, str(error), wire.method)
    return (wire.method, wire.uri, wire.version, wire.status, wire.reason)


METHODS = st.sampled_from(
    ["INVITE", "ACK", "BYE", "OPTIONS", "invite", "FOO", "NOTIFY", "IN<VITE", "INVITE\t", "", "É"]
)
URIS = st.sampled_from(
    ["sip:a@b", "sip:+44@10.0.0.1:5060;user=phone", "<sip:a@b>", "sip:a\tb", "", "tel:+1",
     "sip:a@b ", "sip:ä@b", "sip:a@b>", "sip:a\rb", "sip:a\xa0b", "sip:a\x85b", "sip:a\x0bb"]
)  # fmt: skip
VERSIONS = st.sampled_from(
    ["SIP/2.0", "SIP/3.0", "sip/2.0", "SIP/2.0 ", "SIP/2.0\r", "SIP/2.0x", "SIP/2", "SIP/2.0 x"]
)
SEPARATORS = st.sampled_from([" ", " ", " ", "  ", "\t"])
CODES = st.sampled_from(["200", "100", "486", "699", "099", "700", "2x0", "²00", "20", "2000"])
REASONS = st.sampled_from(["OK", "", "Busy Here", " two  spaces", "tab\there", "é", "a\rb", "\xa0"])


@st.composite
def start_lines(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        sip = draw(st.sampled_from(["SIP/2.0", "SIP/2.0", "sip/2.0", "SIP/2.1", "SIP/2.0 "]))
        tail = draw(st.sampled_from([" ", " ", ""])) + draw(REASONS)
        return sip + draw(SEPARATORS) + draw(CODES) + tail
    line = draw(METHODS) + draw(SEPARATORS) + draw(URIS) + draw(SEPARATORS) + draw(VERSIONS)
    return line.rstrip("\r")  # a CR at the end would make the block's line ending CRCRLF


@SETTINGS
@given(start_lines())
def test_the_fast_reading_is_the_regex_reading(line: str) -> None:
    if not line or line[0] in " \t":
        return  # split_message refuses those before any start-line parse
    assert parser_reading(line) == regex_reading(line)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("INVITE sip:a@b SIP/2.0", ("INVITE", "sip:a@b", "SIP/2.0", 0, "")),
        ("SIP/2.0 200 OK", (None, "", "SIP/2.0", 200, "OK")),
        ("SIP/2.0 180 ", (None, "", "SIP/2.0", 180, "")),
        ("SIP/2.0 603 Decline  now", (None, "", "SIP/2.0", 603, "Decline  now")),
        ("INVITE sip:a@b SIP/7.0", ("VersionNotSupported", "SIP version SIP/7.0 not supported",
                                    "INVITE")),
        ("SIP/2.0 ²00 OK", ("UnparseableMessage", "malformed status line: 'SIP/2.0 ²00 OK'",
                            None)),
        ("INVITE <sip:a@b> SIP/2.0", ("BadRequest",
                                      "malformed request line: 'INVITE <sip:a@b> SIP/2.0'",
                                      "INVITE")),
    ],
)  # fmt: skip
def test_start_lines(line: str, expected: tuple[object, ...]) -> None:
    assert parser_reading(line) == expected == regex_reading(line)
