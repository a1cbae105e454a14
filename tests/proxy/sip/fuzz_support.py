"""Generators and oracle for fuzzing the whole sans-IO core (issue 7): mutated RFC 4475 messages,
mutated answers to requests the core really forwarded, and random bytes, from the PBX, the trunk
and an outsider, as datagrams or as streams cut anywhere. Shared by the CI-sized hypothesis test
(test_fuzz_core.py) and the standalone `bench/fuzz_core.py --count 1000000`.

Every choice comes from one `random.Random`, so an input is reproducible from its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from proxy.sip.addresses import Outgoing, Source
from proxy.sip.core import ProxyCore
from proxy.sip.errors import SipError
from proxy.sip.framing import StreamFramer
from proxy.sip.message import split_message
from proxy.sip.parse import parse_message
from tests.proxy.sip.support import TRUNK, invite, make_core, response_to, sent_to
from tests.proxy.sip.torture_support import NAMES, load
from tests.proxy.test_fuzz_live import MAX_DATAGRAM, MUTATIONS, Mutation

SOURCES: dict[str, Source] = {
    "pbx": Source("udp", "127.0.0.1", 5070),
    "trunk": Source("udp", "127.0.0.1", 5080),
    "outsider": Source("udp", "10.9.9.9", 5060),
}
STREAM_SOURCES: dict[str, Source] = {
    "pbx": Source("tcp", "127.0.0.1", 40001, connection=1),
    "trunk": Source("tcp", "127.0.0.1", 5080, connection=2),
    "outsider": Source("tcp", "10.9.9.9", 40002, connection=3),
}
CORPUS: tuple[bytes, ...] = (*(load(name) for name in NAMES), invite())
NUMBERS = (
    "9" * 4301, "9" * 5000, "0" * 5000 + "7", str(2**31), str(2**31 - 1), str(2**32), "65536",
    "256", "-1", "0", "\xb2", "\u0661", "1e9", "",
)
NUMERIC_SPOTS = (
    b"CSeq: ", b"Max-Forwards: ", b"Content-Length: ", b";rport=", b":", b";tr=", b"Expires: ",
    b"Retry-After: ", b"RSeq: ", b";ttl=",
)


# ----------------------------------------------------------------------------- mutations
def huge_number(rng: random.Random, data: bytes) -> bytes:
    """A number where the core reads one: every numeric field, ports, Route tr=."""
    spot = rng.choice(NUMERIC_SPOTS)
    number = rng.choice(NUMBERS).encode("utf-8")
    index = data.find(spot)
    if index < 0:
        return _insert_header(rng, data, _numeric_header(rng, spot, number))
    start = index + len(spot)
    end = start
    while end < len(data) and data[end : end + 1].isdigit():
        end += 1
    return data[:start] + number + data[end:]


def _numeric_header(rng: random.Random, spot: bytes, number: bytes) -> bytes:
    if spot == b";tr=":
        return b"Route: <sip:127.0.0.1:5060;lr;tr=" + number + b">"
    if spot in (b";rport=", b";ttl=", b":"):
        return b"Via: SIP/2.0/UDP 10.0.0.1:" + number + b";branch=z9hG4bK-n;rport=" + number
    return spot.rstrip(b" ") + b" " + number


def via_flood(rng: random.Random, data: bytes) -> bytes:
    """Many Via lines (issue 7: 4,600 of them in one datagram)."""
    count = rng.choice([10, 200, 1000, 4600])
    line = b"Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK-flood\r\n"
    index = data.find(b"\n") + 1
    return (data[:index] + line * count + data[index:])[:MAX_DATAGRAM]


def scanner(rng: random.Random, data: bytes) -> bytes:
    agent = rng.choice([b"friendly-scanner", b"SIPVicious", b"sipcli/1.8", b"VaxSIPUserAgent"])
    return _insert_header(rng, data, b"User-Agent: " + agent)


def _insert_header(rng: random.Random, data: bytes, line: bytes) -> bytes:
    lines = data.split(b"\r\n")
    lines.insert(rng.randint(1, max(1, min(len(lines) - 1, 12))), line)
    return b"\r\n".join(lines)


ALL_MUTATIONS: tuple[Mutation, ...] = (*MUTATIONS, huge_number, huge_number, via_flood, scanner)


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
        data = rng.choice(ALL_MUTATIONS)(rng, data)
    return data[:MAX_DATAGRAM]


# ----------------------------------------------------------------------------- one input
@dataclass(frozen=True, slots=True)
class FuzzInput:
    data: bytes
    side: str  # pbx, trunk, outsider
    stream: bool
    cuts: tuple[int, ...]  # stream read boundaries
    answer: bool  # the data is a mutated answer to a request the core forwarded first


def fuzz_input(rng: random.Random) -> FuzzInput:
    roll = rng.random()
    answer = roll < 0.2
    if answer:
        data = b""  # built by `run_input` from what the core really forwards
    elif roll < 0.3:
        data = rng.randbytes(rng.randint(0, 2000))
    else:
        data = mutate(rng, rng.choice(CORPUS))
    stream = rng.random() < 0.3
    cuts = tuple(sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 4))))
    side = "trunk" if answer else rng.choice(tuple(SOURCES))
    return FuzzInput(data, side, stream, cuts, answer)


def run_input(core: ProxyCore, rng: random.Random, item: FuzzInput, now: float) -> list[Outgoing]:
    """Feed one input; every exception propagates (that is what the fuzz looks for)."""
    out: list[Outgoing] = []
    data = item.data
    if item.answer:
        core.receive(invite(call_id=f"fuzz-{rng.random()}@pbx"), SOURCES["pbx"], now)
        forwarded = sent_to(core.datagrams_to_send(), TRUNK)
        if not forwarded:
            return out
        status = rng.choice([100, 180, 183, 200, 404, 486, 503])
        data = mutate(rng, response_to(forwarded[0], status, "Fuzz"))
    source = (STREAM_SOURCES if item.stream else SOURCES)[item.side]
    if not item.stream:
        core.receive(data, source, now)
        return core.datagrams_to_send()
    framer = StreamFramer()
    pieces = [data[a:b] for a, b in zip((0, *item.cuts), (*item.cuts, len(data)), strict=True)]
    for piece in pieces:
        for frame in framer.feed(piece):
            if frame.fatal:
                core.receive_broken_stream(frame.data, frame.reason, source, status=frame.status)
            else:
                core.receive(frame.data, source, now)
            out += core.datagrams_to_send()
    return out


# ----------------------------------------------------------------------------- the oracle
OWN_REPLY_STATUSES = range(100, 700)


def output_problem(outgoing: Outgoing, source: Source) -> str | None:
    """None if `outgoing` is acceptable: a close request, a message that parses fully, or our
    own error reply to the sender, which copies the sender's lines as they came (RFC 3261
    8.2.6.2) and so need only be framed: status line, header lines, `Content-Length: 0`."""
    data = outgoing.data
    if not data:
        return None if outgoing.close_after else "empty datagram without close_after"
    try:
        parse_message(data, datagram=True)
        return None
    except SipError as error:
        problem = f"{type(error).__name__}: {error.detail}"
    if outgoing.target == source.reply_target() and _framed_own_reply(data):
        return None
    return problem


def _framed_own_reply(data: bytes) -> bool:
    if not data.startswith(b"SIP/2.0 ") or not data[8:11].isdigit():
        return False
    try:
        wire = split_message(data)
    except SipError:
        return False
    lengths = [header.value for header in wire.get_all("content-length")]
    return int(data[8:11]) in OWN_REPLY_STATUSES and wire.body == b"" and lengths == ["0"]


def fuzz_one(core: ProxyCore, rng: random.Random, now: float) -> list[str]:
    """One generated input through `core` (and sometimes a timer): the problems found in what
    it sent. An exception escaping the core propagates: the fuzz target is that none does."""
    item = fuzz_input(rng)
    # A quarter of the inputs arrive while the proxy sheds (as the glue sets it per new INVITE):
    # the glances that answer a new INVITE's 503 and absorb its ACK are fuzzed too.
    core.set_overloaded(rng.random() < 0.25)
    out = run_input(core, rng, item, now)
    if rng.random() < 0.1:
        core.handle_timer(now)
        out += core.datagrams_to_send()
    source = (STREAM_SOURCES if item.stream else SOURCES)[item.side]
    return [problem for o in out if (problem := output_problem(o, source)) is not None]


@dataclass
class FuzzRun:
    """A long-lived core fed input after input (state builds up as in a real run), renewed
    every `renew` inputs so that memory stays bounded. Input `index` of seed `seed` is
    reproducible on its own: `random.Random(input_seed(seed, index))`."""

    seed: int
    renew: int = 2000
    inputs: int = 0
    exceptions: list[str] = field(default_factory=list)
    bad_outputs: list[str] = field(default_factory=list)
    _core: ProxyCore = field(default_factory=make_core)
    _now: float = 0.0

    def one(self, index: int) -> None:
        rng = random.Random(input_seed(self.seed, index))
        if self.inputs and self.inputs % self.renew == 0:
            self._core = make_core()
        self.inputs += 1
        self._now += rng.choice((0.0, 0.01, 0.5, 5.0))
        try:
            problems = fuzz_one(self._core, rng, self._now)
        except Exception as error:  # the fuzz target: nothing may escape
            self.exceptions.append(f"input {index}: {type(error).__name__}: {error!s:.200}")
            self._core = make_core()
            return
        self.bad_outputs += [f"input {index}: {problem}" for problem in problems]


def input_seed(seed: int, index: int) -> int:
    return seed * 1_000_003 + index
