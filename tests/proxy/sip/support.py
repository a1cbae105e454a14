"""Shared fixtures for core tests: a config on loopback, a fixed policy, message builders."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.sip.addresses import Outgoing, Source, Target
from proxy.sip.core import ProxyCore
from proxy.sip.policy import CallerIdDecision, ProxyConfig

PROXY = Target("udp", "127.0.0.1", 5060)
PBX = Target("udp", "127.0.0.1", 5070)
TRUNK = Target("udp", "127.0.0.1", 5080)
PBX_SOURCE = Source("udp", "127.0.0.1", 5070)
TRUNK_SOURCE = Source("udp", "127.0.0.1", 5080)
SECRET = b"test-secret"


@dataclass
class FixedPolicy:
    number: str = "+3228880001"
    name: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def decide(self, user: str, destination: str) -> CallerIdDecision:
        self.calls.append((user, destination))
        return CallerIdDecision(self.number, self.name, "test", "v1")


def make_core(policy: FixedPolicy | None = None, *, trunk: Target = TRUNK) -> ProxyCore:
    advertised = (PROXY, Target("tcp", PROXY.host, PROXY.port))
    config = ProxyConfig(advertised=advertised, pbx=PBX, trunk=trunk, secret=SECRET)
    return ProxyCore(config, policy or FixedPolicy())


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


def response_to(request: bytes, status: int, reason: str, *, to_tag: str | None = "trunk-1",
                extra: str = "") -> bytes:
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
