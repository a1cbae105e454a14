"""Shared fixtures for core tests: a config on loopback, a fixed policy, message builders."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.sip.addresses import Outgoing, Source, Target
from proxy.sip.core import ProxyCore
from proxy.sip.policy import CallerIdDecision, CallFacts, ProxyConfig

PROXY = Target("udp", "127.0.0.1", 5060)
PBX = Target("udp", "127.0.0.1", 5070)
TRUNK = Target("udp", "127.0.0.1", 5080)
PBX_SOURCE = Source("udp", "127.0.0.1", 5070)
TRUNK_SOURCE = Source("udp", "127.0.0.1", 5080)
SECRET = b"test-secret"

# What invite() carries and what the trunk then sees (FixedPolicy's number, trunk on loopback).
ORIGINAL_FROM = '"Alice" <sip:1001@pbx.example.com>;tag=pbx-tag-1'
REWRITTEN_FROM = '"+3228880001" <sip:+3228880001@127.0.0.1>;tag=pbx-tag-1'
CALLEE = "<sip:00442079460000@127.0.0.1>;tag=trunk-1"
PBX_VIA = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport"
PBX_CONTACT = "sip:1001@127.0.0.1:5070"
TRUNK_CONTACT = "sip:callee@127.0.0.1:5080"
BACKUP = Target("udp", "127.0.0.2", 5090)  # a second --trunk
BACKUP_SOURCE = Source("udp", "127.0.0.2", 5090)


@dataclass
class FixedPolicy:
    number: str = "+3228880001"
    name: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def decide(self, user: str, destination: str) -> CallerIdDecision:
        self.calls.append((user, destination))
        return CallerIdDecision(self.number, self.name, "test", "v1")

    def decide_call(self, call: CallFacts) -> CallerIdDecision:
        return self.decide(call.user_at("from") or "", call.destination)


def make_core(
    policy: FixedPolicy | None = None,
    *,
    trunk: Target = TRUNK,
    extra_trunks: tuple[Target, ...] = (),
) -> ProxyCore:
    advertised = (PROXY, Target("tcp", PROXY.host, PROXY.port))
    config = ProxyConfig(
        advertised=advertised, pbx=PBX, trunk=trunk, extra_trunks=extra_trunks, secret=SECRET
    )
    return ProxyCore(config, policy or FixedPolicy())


def two_trunks() -> Clocked:
    """A fake-clocked core with TRUNK and BACKUP as its --trunk's, in that order."""
    return Clocked(make_core(extra_trunks=(BACKUP,)))


def invite(
    *,
    user: str = "1001",
    to: str = "00442079460000",
    branch: str = "z9hG4bK-inv-1",
    call_id: str = "call-1@pbx",
    extra: str = "",
    cseq: int = 1,
) -> bytes:
    body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
    return (
        f"INVITE sip:{to}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f'From: "Alice" <sip:{user}@pbx.example.com>;tag=pbx-tag-1\r\n'
        f"To: <sip:{to}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:{user}@127.0.0.1:5070>\r\n"
        f"P-Preferred-Identity: <sip:{user}@pbx.example.com>\r\n"
        f"{extra}"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def response_to(
    request: bytes, status: int, reason: str, *, to_tag: str | None = "trunk-1", extra: str = ""
) -> bytes:
    """What a UAS answers: Via, From, To (+tag), Call-ID, CSeq and Record-Route copied."""
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    keep = ("via:", "from:", "to:", "call-id:", "cseq:", "record-route:")
    lines = [f"SIP/2.0 {status} {reason}"]
    for line in head:
        if line.lower().startswith(keep):
            if line.lower().startswith("to:") and to_tag and "tag=" not in line:
                line += f";tag={to_tag}"
            lines.append(line)
    lines.append(extra.rstrip("\r\n")) if extra else None
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def sent_to(out: list[Outgoing], target: Target) -> list[bytes]:
    return [o.data for o in out if (o.target.host, o.target.port) == (target.host, target.port)]


# ------------------------------------------------------------ fake clock and inspection helpers
# (appended for the core transaction tests; the helpers above are unchanged)

_COMPACT = {
    "f": "from",
    "t": "to",
    "v": "via",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
}


@dataclass
class Clocked:
    """A core driven by a fake clock: `now` only moves when a test moves it."""

    core: ProxyCore
    now: float = 0.0
    fired: list[tuple[float, Outgoing]] = field(default_factory=list)

    def receive(self, data: bytes, source: Source, *, at: float | None = None) -> list[Outgoing]:
        if at is not None:
            self.advance(at)
        self.core.receive(data, source, self.now)
        return self.core.datagrams_to_send()

    def advance(self, until: float) -> list[tuple[float, Outgoing]]:
        """Fire every timer due up to `until`, each at its deadline; what they sent, and when."""
        sent: list[tuple[float, Outgoing]] = []
        while (deadline := self.core.get_timer()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            self.core.handle_timer(self.now)
            sent += [(self.now, out) for out in self.core.datagrams_to_send()]
        self.now = max(self.now, until)
        self.fired += sent
        return sent


def head_lines(data: bytes) -> list[str]:
    """Header lines (folding kept inside the line), without the start line."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines: list[str] = []
    for line in head.split("\r\n")[1:]:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += "\r\n" + line
        else:
            lines.append(line)
    return lines


def start_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def header_name(line: str) -> str:
    name = line.split(":", 1)[0].strip().lower()
    return _COMPACT.get(name, name)


def values(data: bytes, name: str) -> list[str]:
    """Every value of header `name` (case and compact form ignored), one entry per line."""
    wanted = _COMPACT.get(name.lower(), name.lower())
    lines = head_lines(data)
    return [line.split(":", 1)[1].strip() for line in lines if header_name(line) == wanted]


def value(data: bytes, name: str) -> str:
    found = values(data, name)
    assert len(found) == 1, f"expected one {name}, got {found}"
    return found[0]


def body_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def param(header_value: str, name: str) -> str | None:
    """A `;name=value` parameter anywhere in a header value (inside <> too)."""
    for part in header_value.replace(">", ";").split(";")[1:]:
        key, _, val = part.strip().partition("=")
        if key.lower() == name.lower():
            return val
    return None


def with_header_replaced(data: bytes, name: str, new_line: str | None) -> bytes:
    """`data` with every `name` line replaced by `new_line` (or removed when None)."""
    head, body = data.split(b"\r\n\r\n", 1)
    first, *_ = head.split(b"\r\n", 1)
    kept: list[str] = []
    done = False
    for line in head_lines(data):
        if header_name(line) == name.lower():
            if new_line is not None and not done:
                kept.append(new_line)
                done = True
            continue
        kept.append(line)
    return b"\r\n".join([first, *(line.encode("latin-1") for line in kept)]) + b"\r\n\r\n" + body


def in_dialog(
    method: str,
    *,
    uri: str,
    via: str,
    from_: str,
    to: str,
    call_id: str = "call-1@pbx",
    cseq: int = 2,
    route: str | None = None,
    extra: str = "",
) -> bytes:
    route_line = f"Route: {route}\r\n" if route else ""
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        f"{route_line}"
        f"Max-Forwards: 70\r\n"
        f"From: {from_}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def our_via_removed(response: bytes) -> bytes:
    """`response` as the PBX must get it: the first Via line (ours, alone on it) removed."""
    head, body = response.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    first_via = next(i for i, line in enumerate(lines) if header_name(line.decode()) == "via")
    del lines[first_via]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def forwarded_invite(clocked: Clocked, request: bytes | None = None, *, at: float = 0.0) -> bytes:
    """The PBX sends an INVITE; the single copy the trunk got."""
    out = clocked.receive(request or invite(), PBX_SOURCE, at=at)
    to_trunk = sent_to(out, clocked.core.config.trunk)
    assert len(to_trunk) == 1, out
    return to_trunk[0]


def pbx_cancel() -> bytes:
    """The PBX's CANCEL of invite()."""
    return in_dialog(
        "CANCEL",
        uri="sip:00442079460000@127.0.0.1:5060",
        via=PBX_VIA,
        from_=ORIGINAL_FROM,
        to="<sip:00442079460000@127.0.0.1>",
        cseq=1,
    )
