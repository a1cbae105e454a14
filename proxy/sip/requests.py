"""Edits a forwarded request needs besides the caller ID: Via, Max-Forwards, Route, Record-Route.

Our Record-Route carries the signed dialog identity in its `cid` parameter (see identity.py).
"""

from __future__ import annotations

import re
from typing import Final

from proxy.sip.addresses import Source, Target, normalise_host
from proxy.sip.edits import (
    Edit,
    append_header,
    insert_first_line,
    insert_line_before,
    remove_header,
    replace_span,
    replace_value,
)
from proxy.sip.errors import BadRequest, SipError
from proxy.sip.grammar import SipUri, parse_name_addr, parse_sip_uri, split_comma_values
from proxy.sip.identity import DialogIdentity
from proxy.sip.message import Header
from proxy.sip.our_address import OurAddress
from proxy.sip.parse import Message
from proxy.sip.policy import ProxyConfig
from proxy.sip.transactions import Restore
from proxy.sip.values import FrozenValue

IDENTITY_PARAM: Final = "cid"
TRUNK_PARAM: Final = "tr"
MARK_PARAM: Final = "dlg"  # a dialog without identity token went through us (identity.py)
_USERLESS_SIP_URI: Final = re.compile(
    r"(sips?):(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?", re.IGNORECASE
)
_VALUELESS_RPORT: Final = re.compile(r";[ \t]*rport(?=[ \t]*(?:;|$))", re.IGNORECASE)
_new: Final = tuple.__new__  # a NamedTuple's own __new__ is a Python function (a lambda): skip it


def uri_user(uri: str) -> str:
    try:
        return parse_sip_uri(uri).user or ""
    except SipError:
        return ""


def max_forwards_edits(msg: Message) -> list[Edit]:
    header = msg.wire.get("max-forwards")
    if header is None:
        return [append_header(msg.wire, "Max-Forwards", b"70")]  # RFC 3261 16.6 step 3
    assert msg.max_forwards is not None
    return [replace_value(header, str(max(msg.max_forwards - 1, 0)).encode())]


def content_length_edits(msg: Message, target: Target) -> list[Edit]:
    """A stream transport needs Content-Length (RFC 3261 18.3); UDP may have omitted it."""
    if target.transport == "udp" or msg.wire.get("content-length") is not None:
        return []
    return [append_header(msg.wire, "Content-Length", str(len(msg.wire.body)).encode())]


def proxy_require_options(msg: Message) -> list[str]:
    """We implement no proxy extension, so every Proxy-Require option is unsupported."""
    options: list[str] = []
    for header in msg.wire.get_all("proxy-require"):
        options += [header.value[s:e] for s, e in split_comma_values(header.value) if e > s]
    return options


def via_edits(msg: Message, source: Source, ours: OurAddress, branch: str) -> list[Edit]:
    """Our Via on top; received/rport on the sender's Via (RFC 3261 18.2.1, RFC 3581)."""
    top = msg.top_via
    our_via = ours.via_prefix + branch.encode() + b";rport\r\n"
    edits = [insert_first_line(msg.wire, our_via)]
    rport = None
    if "rport" in top.params:
        header = msg.wire.header_at(top.header_index)
        base = header.value_start
        rport = _VALUELESS_RPORT.search(header.value, top.start - base, top.params_end - base)
        if rport is not None:
            at, end = base + rport.start(), base + rport.end()
            edits.append(replace_span(at, end, b";rport=%d" % source.port))
    if "received" not in top.params and (
        rport is not None
        or (top.host != source.host and normalise_host(top.host) != normalise_host(source.host))
    ):
        received = f";received={source.host}".encode()
        edits.append(replace_span(top.params_end, top.params_end, received))
    return edits


def _our_uri(uri_text: str, config: ProxyConfig) -> SipUri | None:
    """The URI, parsed once, if it names us or a peer instance (same secret, behind the same
    dispatcher: its Record-Route entries are ours to take out and its tokens ours to read)."""
    try:
        uri = _parse_route_uri(uri_text)
    except SipError:
        return None
    return uri if is_our_sip_uri(uri, config) else None


def _parse_route_uri(text: str) -> SipUri:
    """`parse_sip_uri` of a URI without user part or headers (ours, in Route and Record-Route)
    by a pattern that cannot backtrack; anything else is left to `parse_sip_uri`."""
    head, semicolon, params = text.partition(";")
    match = None if "@" in text or "?" in text else _USERLESS_SIP_URI.fullmatch(head)
    if match is None:
        return parse_sip_uri(text)
    port = int(match[3]) if match[3] else None
    if port is not None and not 0 < port < 65536:
        return parse_sip_uri(text)  # refused there
    found = _uri_params(params) if semicolon else {}
    return _new(SipUri, (match[1].lower(), None, match[2].lower(), port, found, False))


def _uri_params(text: str) -> dict[str, str | None]:
    """`name[=value]` items after the first `;`, as `parse_sip_uri` gives them."""
    found: dict[str, str | None] = {}
    for item in text.split(";"):
        name, equals, value = item.partition("=")
        found[name.strip().lower()] = value if equals else None
    return found


def is_our_sip_uri(uri: SipUri, config: ProxyConfig) -> bool:
    """The host is normalised only when it is not literally one of our addresses."""
    port = uri.port or 5060
    if config.is_our_hostport(uri.host, port):
        return True
    if uri.host.replace(".", "").isdigit():
        return False  # a dotted IPv4 literal is already in normal form: it is not ours
    return config.is_our_hostport(normalise_host(uri.host), port)


def is_options_for_us(msg: Message, config: ProxyConfig) -> bool:
    """RFC 3261 11: an out-of-dialog OPTIONS whose Request-URI is our address (no user part)
    and that carries no Route asks this proxy itself (a load balancer's keepalive)."""
    if msg.method != "OPTIONS" or msg.to_addr.tag is not None or msg.wire.get("route"):
        return False
    uri = _our_uri(msg.wire.uri, config)
    return uri is not None and not uri.user


def record_route_edits(
    msg: Message,
    config: ProxyConfig,
    upstream: OurAddress,
    downstream: OurAddress,
    identity: DialogIdentity | None,
    trunk_index: int = 0,
) -> list[Edit]:
    """Record-Route ourselves (loose routing): one entry, or two when the sides see us at
    different addresses or transports (RFC 5658), the top one facing downstream. Only the top
    one carries the dialog's parameters: in-dialog requests pop both, in either order. `tr`
    names the trunk of the dialog when it is not the first one."""
    params = b";%s=%d" % (TRUNK_PARAM.encode(), trunk_index) if trunk_index else b""
    if identity is not None:
        token = config.identity_seal.seal(msg.call_id, identity)
        params += b";" + IDENTITY_PARAM.encode() + b"=" + token.encode("ascii")
    else:
        mark = config.identity_seal.mark(msg.call_id)
        params += b";" + MARK_PARAM.encode() + b"=" + mark.encode("ascii")
    lines = [b"Record-Route: " + downstream.record_route_prefix + params + b">\r\n"]
    if upstream.target != downstream.target:
        lines.append(b"Record-Route: " + upstream.record_route_prefix + b">\r\n")
    existing = msg.wire.get("record-route")
    if existing is not None:
        return [insert_line_before(existing, line) for line in lines]
    # Not between two Via rows: some parsers only look at the first contiguous block.
    after_vias = msg.wire.header_at(msg.vias[-1].header_index).end
    return [replace_span(after_vias, after_vias, line) for line in lines]


def _comma_values(value: str) -> list[tuple[int, int]]:
    """The spans of a list header's values; one value (most Route headers) without a scan."""
    if "," not in value:
        return [(0, len(value))]  # a Header's value has no surrounding whitespace
    return split_comma_values(value)


class OurRoute(FrozenValue):
    """What our Route entries said: the edits removing them, the dialog's identity, its trunk,
    and whether they showed the dialog went through us (`known`: a valid token or mark)."""

    __match_args__ = ("edits", "identity", "trunk_index", "known", "next_route")
    __slots__ = __match_args__

    edits: list[Edit]
    identity: DialogIdentity | None
    trunk_index: int
    known: bool
    next_route: str | None  # the URI of the first Route entry left after ours (next_hop.py)

    def __init__(
        self,
        edits: list[Edit],
        identity: DialogIdentity | None,
        trunk_index: int,
        known: bool = False,
        next_route: str | None = None,
    ) -> None:
        object.__setattr__(self, "edits", edits)
        object.__setattr__(self, "identity", identity)
        object.__setattr__(self, "trunk_index", trunk_index)
        object.__setattr__(self, "known", known or identity is not None)
        object.__setattr__(self, "next_route", next_route)


def pop_our_routes(msg: Message, config: ProxyConfig) -> OurRoute:
    """Remove the leading Route entries that are ours; decode and verify their identity."""
    edits: list[Edit] = []
    identity: DialogIdentity | None = None
    trunk_index = 0
    known = False
    next_route: str | None = None
    for header in msg.wire.get_all("route"):
        spans = _comma_values(header.value)
        mine = 0
        for start, end in spans:
            value = msg.memo.name_addr(header.value[start:end], header.value_start + start)
            uri = _our_uri(value.uri, config)
            if uri is None:
                next_route = value.uri
                break
            identity = identity or _identity_in(uri.params, msg.call_id, config)
            trunk_index = trunk_index or _trunk_index_in(uri.params, config)
            known = known or _marked_in(uri.params, msg.call_id, config)
            mine += 1
        if mine == len(spans):
            edits.append(remove_header(header))
            continue
        if mine:
            cut_end = header.value_start + spans[mine][0]
            edits.append(replace_span(header.value_start, cut_end, b""))
        break
    return OurRoute(edits, identity, trunk_index, known, next_route)


def _marked_in(params: dict[str, str | None], call_id: str, config: ProxyConfig) -> bool:
    """Our dialog mark is there (and right: a wrong one is a 400)."""
    if MARK_PARAM not in params:
        return False
    config.identity_seal.check_mark(call_id, params[MARK_PARAM] or "")
    return True


def _trunk_index_in(params: dict[str, str | None], config: ProxyConfig) -> int:
    text = params.get(TRUNK_PARAM)
    if text is None:
        return 0
    # ASCII digits, length before int() (issue 7: 4,301+ digits made int() raise ValueError)
    if not text.isascii() or not text.isdigit() or len(text) > 4 or int(text) >= len(config.trunks):
        raise BadRequest(f"unknown trunk {text[:8]!r} in Route")
    return int(text)


def _identity_in(
    params: dict[str, str | None], call_id: str, config: ProxyConfig
) -> DialogIdentity | None:
    if IDENTITY_PARAM not in params:
        return None
    token = params[IDENTITY_PARAM]
    if not token:
        raise BadRequest("empty caller-identity token in Route")
    return config.identity_seal.unseal(call_id, token)


def undo_strict_routing(
    msg: Message, config: ProxyConfig, request_uri: SipUri | None
) -> OurRoute | None:
    """RFC 3261 16.4: a strict router before us put our Record-Route URI in the Request-URI
    (`request_uri`, parsed by the caller; None when it is no SIP URI). Put the remote target
    (the last Route value) back there and take it out of the Route set."""
    if request_uri is None or not is_our_sip_uri(request_uri, config):
        return None
    values = [
        (header, spans, index)
        for header in msg.wire.get_all("route")
        for spans in [_comma_values(header.value)]
        for index in range(len(spans))
    ]
    if not values:
        return None  # a request addressed to the proxy itself: nothing to undo
    header, spans, index = values[-1]
    start, end = spans[index]
    target = parse_name_addr(header.value[start:end], header.value_start + start)
    uri_start = len(msg.wire.method or "") + 1
    edits = [
        replace_span(uri_start, uri_start + len(msg.wire.uri), target.uri.encode("latin-1")),
        _remove_list_value(header, spans, index),
    ]
    params = request_uri.params
    identity = _identity_in(params, msg.call_id, config)
    known = _marked_in(params, msg.call_id, config)
    # The next hop: the first Route value left, else the remote target put back (16.12).
    next_route = target.uri
    if len(values) > 1:
        first, first_spans, _ = values[0]
        start, end = first_spans[0]
        next_route = parse_name_addr(first.value[start:end], first.value_start + start).uri
    return OurRoute(edits, identity, _trunk_index_in(params, config), known, next_route)


def _remove_list_value(header: Header, spans: list[tuple[int, int]], index: int) -> Edit:
    if len(spans) == 1:
        return remove_header(header)
    base = header.value_start
    if index == 0:
        return replace_span(base + spans[0][0], base + spans[1][0], b"")
    return replace_span(base + spans[index - 1][1], base + spans[index][1], b"")


def restore_from_record_route(msg: Message, config: ProxyConfig) -> Restore | None:
    """For a response without transaction: which identity header to give back, from our token."""
    identity = None
    for header in msg.wire.get_all("record-route"):
        for start, end in _comma_values(header.value):
            value = parse_name_addr(header.value[start:end], header.value_start + start)
            uri = _our_uri(value.uri, config)
            if uri is not None:
                try:
                    identity = _identity_in(uri.params, msg.call_id, config)
                except BadRequest:
                    identity = None
                if identity is not None:
                    break
    if identity is None:
        return None
    # By the PBX's tag, not by bytes: a UA may re-serialise From/To (spacing, quoting, case).
    pbx_tag = parse_name_addr(identity.original_from.decode("latin-1")).tag
    from_header, to_header = msg.wire.one("from"), msg.wire.one("to")
    from_value = msg.raw[from_header.value_start : from_header.value_end]
    to_value = msg.raw[to_header.value_start : to_header.value_end]
    if from_value == identity.rewritten_from or (pbx_tag and msg.from_addr.tag == pbx_tag):
        return Restore("from", identity.original_from)  # a response to the PBX's request
    if to_value == identity.original_from or (pbx_tag and msg.to_addr.tag == pbx_tag):
        return Restore("to", identity.rewritten_from)  # a response to a trunk's request
    return None
