"""Benchmark: a typical outbound INVITE through the SIP core, and the parser alone.

    python3 bench/bench_parser.py [--messages 20000] [--repeat 5]

Times (microseconds of CPU per message, `time.process_time`, the cyclic GC off while timing,
the best of `--repeat` rounds: the machine is shared, the best round is the least disturbed):
- parse_message alone (datagram), on the INVITE and on RFC 4475 wsinv (folding, compact forms),
  and on the 200 OK a trunk answers it with;
- StreamFramer + parse_message (TCP path);
- ProxyCore.receive: parse + transaction + caller-ID decision + rewrite + serialise, i.e. what the
  proxy does for each new call from the PBX (each message a new call, so no retransmission path);
- ProxyCore.receive of a new INVITE while the core sheds load (503 + Retry-After);
- ProxyCore.receive of an outsider's INVITE (bounded glance, short 403).
Prints numbers only; it asserts nothing about speed, machines differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from proxy.sip.addresses import Source, Target
from proxy.sip.core import ProxyCore
from proxy.sip.framing import StreamFramer
from proxy.sip.parse import parse_message
from proxy.sip.policy import CallerIdDecision, CallFacts, ProxyConfig

PBX = Source("udp", "127.0.0.1", 5070)
WARM_UP = 200
WSINV = Path(__file__).resolve().parents[1] / "tests" / "data" / "rfc4475" / "wsinv.dat"
SDP = (
    "v=0\r\no=- 1234 1234 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


def typical_invite(n: int) -> bytes:
    """What an Asterisk-like PBX sends for a new outbound call."""
    return (
        f"INVITE sip:0044207946{n % 10000:04d}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKPj{n:08x}\r\n"
        f"From: \"Alice\" <sip:1001@pbx.example.com>;tag=pbx-{n}\r\n"
        f"To: <sip:0044207946{n % 10000:04d}@127.0.0.1>\r\n"
        f"Contact: <sip:1001@127.0.0.1:5070;ob>\r\n"
        f"Call-ID: bench-{n}@pbx.example.com\r\n"
        f"CSeq: 4711 INVITE\r\n"
        f"Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER\r\n"
        f"Supported: 100rel, timer, replaces, norefersub\r\n"
        f"Session-Expires: 1800\r\nMin-SE: 90\r\nMax-Forwards: 70\r\n"
        f"P-Preferred-Identity: <sip:1001@pbx.example.com>\r\n"
        f"User-Agent: Asterisk PBX 20.5.0\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


class FixedPolicy:
    def decide_call(self, call: CallFacts) -> CallerIdDecision:
        return CallerIdDecision("+442071234567", "ACME UK", "bench", "v1")


def make_core(max_transactions: int | None = None) -> ProxyCore:
    """The benchmarks' core; `max_transactions` above the default cap (3,000 calls in setup)
    when a benchmark opens more calls than that at once and must not have them shed."""
    proxy = Target("udp", "127.0.0.1", 5060)
    config = ProxyConfig(
        advertised=(proxy, Target("tcp", "127.0.0.1", 5060)),
        pbx=Target("udp", "127.0.0.1", 5070),
        trunk=Target("udp", "127.0.0.1", 5080),
        secret=b"bench-secret",
    )
    if max_transactions is not None:
        config = dataclasses.replace(config, max_transactions=max_transactions)
    return ProxyCore(config, FixedPolicy())


def timed(label: str, count: int, run: Callable[[int], None], repeat: int = 5) -> None:
    for i in range(count, count + WARM_UP):  # warm up on messages the timed loop does not use
        run(i)
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            started = time.process_time()
            for i in range(count):
                run(i)
            best = min(best, time.process_time() - started)
    finally:
        if enabled:
            gc.enable()
    print(f"{label:<52} {best / count * 1e6:8.1f} us/message")


def trunk_ok(n: int) -> bytes:
    """What the trunk answers to `typical_invite(n)` forwarded by the proxy (two Vias)."""
    return (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp0123456789abcdef0123;rport=5060\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;rport=5070;branch=z9hG4bKPj{n:08x}\r\n"
        "Record-Route: <sip:127.0.0.1:5060;lr;cid=0123456789abcdef>\r\n"
        f'From: "ACME UK" <sip:+442071234567@127.0.0.1>;tag=pbx-{n}\r\n'
        f"To: <sip:0044207946{n % 10000:04d}@127.0.0.1>;tag=trunk-{n}\r\n"
        f"Call-ID: bench-{n}@pbx.example.com\r\nCSeq: 4711 INVITE\r\n"
        "Contact: <sip:callee@127.0.0.1:5080>\r\n"
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\nSupported: timer\r\n"
        "Session-Expires: 1800;refresher=uac\r\nServer: trunk-sbc\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best is printed")
    args = parser.parse_args(argv)
    count: int = args.messages
    repeat: int = args.repeat
    logging.getLogger("callerid_proxy").setLevel(logging.WARNING)  # no per-call decision line

    invites = [typical_invite(n) for n in range(count + WARM_UP)]
    answers = [trunk_ok(n) for n in range(count + WARM_UP)]
    wsinv = WSINV.read_bytes()
    print(f"typical INVITE: {len(invites[0])} octets; its 200 OK: {len(answers[0])} octets; "
          f"wsinv: {len(wsinv)} octets")

    timed("parse_message(INVITE)", count, lambda i: _parse(invites[i]), repeat)
    timed("parse_message(200 OK)", count, lambda i: _parse(answers[i]), repeat)
    timed("parse_message(RFC 4475 wsinv)", count, lambda i: _parse(wsinv), repeat)
    timed("parse_message(INVITE, lazy: no validate())", count,
          lambda i: _parse_lazy(invites[i]), repeat)

    def framed(i: int) -> None:
        for frame in StreamFramer().feed(invites[i]):
            parse_message(frame.data, datagram=False)

    timed("StreamFramer + parse_message(INVITE)", count, framed, repeat)

    # Every call stays in setup, so the cap on calls in setup must not shed any (it did: from
    # the 3,001st on, most of this row was 503s).
    core = make_core(max_transactions=count + WARM_UP + 1)
    state = {"sent": 0}

    def through_core(i: int) -> None:
        core.receive(invites[i], PBX, float(i) * 1e-3)
        state["sent"] += len(core.datagrams_to_send())
        core.events_to_handle()  # taken as the glue takes them

    # each INVITE is a new call: parse, decide, rewrite From/PAI, Via, Record-Route, serialise;
    # one round only (a second would retransmit the first's INVITEs), on a fresh core
    timed("ProxyCore.receive(INVITE) incl. caller-ID rewrite", count, through_core, 1)
    print(f"(the core sent {state['sent']} datagrams: 100 Trying + the rewritten INVITE each;"
          f" {core.transaction_count} transactions open, {core.counters['shed']} shed)")

    shedding = make_core()
    shedding.set_overloaded(True)  # what the glue says while the loop lags

    def shed(i: int) -> None:
        shedding.receive(invites[i], PBX, 0.0)
        shedding.datagrams_to_send()

    timed("ProxyCore.receive(INVITE) shed: 503 + Retry-After", count, shed, repeat)

    # trust before work (issue 7): an outsider's request is judged from a bounded glance
    outsider = Source("udp", "10.9.9.9", 5060)
    flood = _via_flood(invites[0], 3500)
    for label, data in (("INVITE", invites[0]), (f"{len(flood)}-octet 3,500-Via flood", flood)):

        def refused(i: int, data: bytes = data) -> None:
            core.receive(data, outsider, 0.0)
            core.datagrams_to_send()

        timed(f"ProxyCore.receive({label}) from an outsider", count, refused, repeat)
    return 0


def _via_flood(request: bytes, vias: int) -> bytes:
    line = b"v: SIP/2.0/UDP h\r\n"
    first = request.index(b"\n") + 1
    return request[:first] + line * vias + request[first:]


def _parse(data: bytes) -> None:
    parse_message(data, datagram=True)


def _parse_lazy(data: bytes) -> None:
    parse_message(data, datagram=True, lazy=True)


if __name__ == "__main__":
    raise SystemExit(main())
