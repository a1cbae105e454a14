"""Trunks given as host names, resolved the RFC 3263 way, off the packet path.

A name without a port is looked up with SRV (`_sip._udp`, `_sip._tcp`, `_sips._tcp` by
transport, RFC 3263 4.2), each SRV target then with A and AAAA; a name with a port, or without
SRV records, with A and AAAA only. The SRV targets come out in priority order, with a weighted
random order among equal priorities (RFC 2782), and become the trunks the core fails over
across. A background task resolves again when the shortest TTL of an answer expires and hands
the new tuple of targets to a callback (the server swaps it into the core's config); a failed
lookup keeps the last good answer and is logged. NAPTR (RFC 3263 4.1) is not used: the
transport is the one configured.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdtypes.IN.SRV
import dns.resolver

from proxy.sip.addresses import Target

log = logging.getLogger("callerid_proxy.dns")

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}  # RFC 3261 19.1.2
SRV_PREFIXES = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}  # RFC 3263 4.2
MIN_TTL_S = 1.0  # a zero TTL must not make us query in a loop
MAX_TTL_S = 3600.0
RETRY_S = 30.0  # after a failure, at most this long (the last TTL if shorter) before trying again
LOOKUP_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class TrunkSpec:
    """One `--trunk` as given: transport, host (an IP literal or a name), port if given."""

    transport: str
    host: str
    port: int | None

    @property
    def is_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def literal_target(self) -> Target:
        return Target(self.transport, self.host, self.port or DEFAULT_PORTS[self.transport])


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: Iterable[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 "Usage rules": lowest priority first; within a priority, repeatedly pick at
    random with probability proportional to weight, zero-weight records placed first so that
    they have a (small) chance of being picked first."""
    ordered: list[SrvRecord] = []
    remaining = list(records)
    for priority in sorted({record.priority for record in remaining}):
        same = [record for record in remaining if record.priority == priority]
        group = sorted(same, key=lambda record: record.weight != 0)
        while group:
            pick = rng.randint(0, sum(record.weight for record in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


class LookupFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Answer:
    targets: tuple[Target, ...]
    ttl: float


class TrunkResolver:
    """The current targets of every trunk spec, refreshed on TTL by `run`."""

    def __init__(
        self,
        specs: Sequence[TrunkSpec],
        nameserver: tuple[str, int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.specs = tuple(specs)
        self._rng = rng or random.Random()
        try:
            self._resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        except (OSError, dns.exception.DNSException) as error:  # no usable resolv.conf
            raise ValueError(f"no DNS resolver configured for trunk names: {error}") from error
        if nameserver is not None:
            self._resolver.nameservers = [nameserver[0]]
            self._resolver.port = nameserver[1]
        self._resolver.lifetime = LOOKUP_TIMEOUT_S
        self._answers: dict[int, Answer] = {
            i: Answer((spec.literal_target(),), MAX_TTL_S)
            for i, spec in enumerate(self.specs) if spec.is_literal
        }
        self._due: dict[int, float] = {}

    @property
    def targets(self) -> tuple[Target, ...]:
        """Every spec's targets, in `--trunk` order: the core's failover list."""
        empty = Answer((), 0)
        return tuple(t for i in range(len(self.specs)) for t in self._answers.get(i, empty).targets)

    def next_due(self) -> float | None:
        return min(self._due.values(), default=None)

    async def refresh(self, now: float | None = None) -> bool:
        """Resolve every name whose answer has expired (all of them the first time); True when
        the targets changed. A lookup that fails keeps the previous answer."""
        now = time.monotonic() if now is None else now
        before = self.targets
        due = [i for i, spec in enumerate(self.specs)
               if not spec.is_literal and self._due.get(i, now) <= now]
        answers = await asyncio.gather(*(self._lookup(self.specs[i]) for i in due))
        for index, answer in zip(due, answers, strict=True):
            spec = self.specs[index]
            if isinstance(answer, Answer):
                previous = self._answers.get(index)
                self._answers[index] = answer
                self._due[index] = now + answer.ttl
                level = logging.DEBUG if previous == answer else logging.INFO
                log.log(level, "trunk %s resolved to %s (ttl %ds)", _describe(spec),
                        ", ".join(t.hostport() for t in answer.targets), answer.ttl)
                continue
            last = self._answers.get(index)
            kept = ", ".join(t.hostport() for t in last.targets) if last else "no address yet"
            log.warning("trunk %s: DNS lookup failed (%s); keeping the last good answer: %s",
                        _describe(spec), answer, kept)
            self._due[index] = now + min(RETRY_S, last.ttl if last else RETRY_S)
        return self.targets != before

    async def run(self, on_change: Callable[[tuple[Target, ...]], None]) -> None:
        """Forever: sleep until the first answer expires, resolve, hand over any change."""
        while True:
            due = self.next_due()
            if due is None:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            try:
                changed = await self.refresh()
            except Exception:  # never let the task die: the last good answer stays in use
                log.exception("trunk DNS refresh failed")
                continue
            if changed and self.targets:
                on_change(self.targets)

    async def _lookup(self, spec: TrunkSpec) -> Answer | str:
        try:
            return await self._resolve(spec)
        except LookupFailed as error:
            return str(error)

    async def _resolve(self, spec: TrunkSpec) -> Answer:
        if spec.port is not None:  # RFC 3263 4.2: a port given means no SRV lookup
            return await self._addresses(spec, spec.host, spec.port)
        qname = f"{SRV_PREFIXES[spec.transport]}.{spec.host}"
        try:
            answer = await self._resolver.resolve(qname, "SRV")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return await self._addresses(spec, spec.host, DEFAULT_PORTS[spec.transport])
        except dns.exception.DNSException as error:
            raise LookupFailed(f"{qname} SRV: {error}") from error
        records = [
            SrvRecord(rr.priority, rr.weight, rr.port, rr.target.to_text(omit_final_dot=True))
            for rr in answer if isinstance(rr, dns.rdtypes.IN.SRV.SRV)
        ]
        ttl = _clamp(answer.rrset.ttl if answer.rrset is not None else MIN_TTL_S)
        targets: list[Target] = []
        for record in order_srv(records, self._rng):
            if record.target in ("", "."):  # RFC 2782: "service decidedly not available"
                continue
            try:
                found = await self._addresses(spec, record.target, record.port)
            except LookupFailed as error:
                log.warning("trunk %s: SRV target skipped: %s", _describe(spec), error)
                continue
            targets += found.targets
            ttl = min(ttl, found.ttl)
        if not targets:
            raise LookupFailed(f"{qname}: no SRV target has an address")
        return Answer(tuple(targets), ttl)

    async def _addresses(self, spec: TrunkSpec, host: str, port: int) -> Answer:
        """A then AAAA of `host`; each address a Target named after the trunk's own name
        (RFC 5922 7.2: a TLS trunk's certificate is checked against the domain we asked for)."""
        targets: list[Target] = []
        ttls: list[float] = []
        problems: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(host, rdtype)
            except dns.exception.DNSException as error:
                problems.append(f"{host} {rdtype}: {error}")
                continue
            ttls.append(answer.rrset.ttl if answer.rrset is not None else MIN_TTL_S)
            targets += [Target(spec.transport, rr.to_text(), port, name=spec.host) for rr in answer]
        if not targets:
            raise LookupFailed("; ".join(problems) or f"{host}: no address")
        return Answer(tuple(targets), _clamp(min(ttls)))


def _clamp(ttl: float) -> float:
    return max(MIN_TTL_S, min(MAX_TTL_S, float(ttl)))


def _describe(spec: TrunkSpec) -> str:
    port = f":{spec.port}" if spec.port is not None else ""
    return f"{spec.transport}:{spec.host}{port}"


def parse_trunk_spec(text: str) -> TrunkSpec:
    """`[udp:|tcp:|tls:]HOST[:PORT]`, HOST an IP literal ([v6] with a port) or a host name.
    The port may be left out only for a name (then SRV decides it)."""
    transport = "udp"
    lowered = text.lower()
    for name in DEFAULT_PORTS:
        if lowered.startswith(f"{name}:"):
            transport, text = name, text[len(name) + 1 :]
            break
    host, port = _split_host_port(text)
    spec = TrunkSpec(transport, host, port)
    if port is None and spec.is_literal:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return spec


def _split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        host, port_text = text, ""  # a bare IPv6 literal
    else:
        host, port_text = text, ""
    host = host.strip()
    if not host or (port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536)):
        raise ValueError(f"expected HOST[:PORT], got {text!r}")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = host.lower().rstrip(".")
    return host, int(port_text) if port_text else None
