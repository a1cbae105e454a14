"""Trunk host names (RFC 3263): SRV then A/AAAA against a loopback DNS server the test runs."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.dns import SrvRecord, TrunkResolver, TrunkSpec, order_srv, parse_trunk_spec
from proxy.sip.addresses import Target
from tests.loopback_dns import LoopbackDns, loopback_dns


@pytest.fixture
def server() -> Iterator[LoopbackDns]:
    with loopback_dns() as running:
        yield running


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip.example.com", TrunkSpec("udp", "sip.example.com", None)),
        ("tls:SIP.Example.com.", TrunkSpec("tls", "sip.example.com", None)),
        ("tcp:sip.example.com:5070", TrunkSpec("tcp", "sip.example.com", 5070)),
        ("127.0.0.1:5080", TrunkSpec("udp", "127.0.0.1", 5080)),
        ("tls:[::1]:5061", TrunkSpec("tls", "::1", 5061)),
    ],
)
def test_parse_trunk_spec(text: str, expected: TrunkSpec) -> None:
    assert parse_trunk_spec(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "tcp:", "host:99999", "[::1]", "host:x"])
def test_parse_trunk_spec_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_trunk_spec(text)


records = st.lists(
    st.builds(SrvRecord, st.integers(0, 3), st.integers(0, 10), st.integers(1, 65535),
              st.sampled_from(["a", "b", "c", "d"])),
    max_size=8,
)


@given(records, st.integers(0, 2**32))
def test_order_srv_is_a_permutation_in_priority_order(items: list[SrvRecord], seed: int) -> None:
    ordered = order_srv(items, random.Random(seed))
    assert Counter(ordered) == Counter(items)
    assert [r.priority for r in ordered] == sorted(r.priority for r in items)


def test_order_srv_follows_the_rfc_2782_running_sum_choice() -> None:
    """RFC 2782: a number drawn uniformly from 0..sum(weights) inclusive picks the first record
    whose running sum reaches it. Weights 3, 1 and 0 (zero moved first) give the sums 0, 3, 4:
    the zero weight is first for 0 (1 in 5), weight 3 for 1..3 (3 in 5), weight 1 for 4."""
    zero, light, heavy = (SrvRecord(10, w, 1, name) for w, name in
                          ((0, "zero"), (1, "light"), (3, "heavy")))
    rng = random.Random(1234)
    draws = 5000
    firsts = Counter(order_srv([heavy, light, zero], rng)[0].target for _ in range(draws))
    assert 0.17 < firsts["zero"] / draws < 0.23, firsts
    assert 0.17 < firsts["light"] / draws < 0.23, firsts
    assert 0.56 < firsts["heavy"] / draws < 0.64, firsts


def two_srv_targets(server: LoopbackDns, ttl: int = 60, rdtype: str = "_sip._udp") -> None:
    # Listed backwards: the order must come from the priorities.
    server.set(f"{rdtype}.trunk.test", "SRV", ttl,
               ["20 0 5090 backup.trunk.test.", "10 0 5080 main.trunk.test."])
    server.set("main.trunk.test", "A", ttl, ["127.0.0.5"])
    server.set("backup.trunk.test", "A", ttl, ["127.0.0.6"])


async def test_srv_targets_in_priority_order_named_after_the_trunk(server: LoopbackDns) -> None:
    two_srv_targets(server)
    resolver = TrunkResolver([TrunkSpec("udp", "trunk.test", None)], server.address)
    assert await resolver.refresh(100.0)
    assert resolver.targets == (Target("udp", "127.0.0.5", 5080), Target("udp", "127.0.0.6", 5090))
    assert {t.name for t in resolver.targets} == {"trunk.test"}


async def test_tls_uses_sips_srv_and_literals_keep_their_place(server: LoopbackDns) -> None:
    two_srv_targets(server, rdtype="_sips._tcp")
    specs = [TrunkSpec("udp", "10.0.0.1", 5060), TrunkSpec("tls", "trunk.test", None)]
    resolver = TrunkResolver(specs, server.address)
    await resolver.refresh(100.0)
    assert resolver.targets == (
        Target("udp", "10.0.0.1", 5060), Target("tls", "127.0.0.5", 5080),
        Target("tls", "127.0.0.6", 5090),
    )
    assert server.asked("_sips._tcp.trunk.test", "SRV") == 1


async def test_without_srv_a_and_aaaa_with_the_default_port(server: LoopbackDns) -> None:
    server.set("plain.test", "A", 60, ["127.0.0.7"])
    server.set("plain.test", "AAAA", 60, ["::1"])
    resolver = TrunkResolver([TrunkSpec("tls", "plain.test", None)], server.address)
    await resolver.refresh(0.0)
    assert resolver.targets == (Target("tls", "127.0.0.7", 5061), Target("tls", "::1", 5061))


async def test_a_given_port_means_no_srv_lookup(server: LoopbackDns) -> None:
    two_srv_targets(server)
    server.set("trunk.test", "A", 60, ["127.0.0.8"])
    resolver = TrunkResolver([TrunkSpec("udp", "trunk.test", 5999)], server.address)
    await resolver.refresh(0.0)
    assert resolver.targets == (Target("udp", "127.0.0.8", 5999),)
    assert server.asked("_sip._udp.trunk.test", "SRV") == 0


async def test_resolved_again_only_once_the_ttl_expired(server: LoopbackDns) -> None:
    two_srv_targets(server, ttl=5)
    resolver = TrunkResolver([TrunkSpec("udp", "trunk.test", None)], server.address)
    await resolver.refresh(100.0)
    server.set("main.trunk.test", "A", 5, ["127.0.0.9"])
    assert not await resolver.refresh(104.0)  # still fresh: not even asked
    assert server.asked("_sip._udp.trunk.test", "SRV") == 1
    assert resolver.next_due() == 105.0
    assert await resolver.refresh(105.0)
    assert resolver.targets[0] == Target("udp", "127.0.0.9", 5080)


async def test_a_failed_lookup_keeps_the_last_good_answer_and_is_logged(
    server: LoopbackDns, caplog: pytest.LogCaptureFixture
) -> None:
    two_srv_targets(server, ttl=5)
    resolver = TrunkResolver([TrunkSpec("udp", "trunk.test", None)], server.address)
    await resolver.refresh(100.0)
    good = resolver.targets
    server.failing = True
    with caplog.at_level(logging.WARNING, logger="callerid_proxy.dns"):
        assert not await resolver.refresh(106.0)
    assert resolver.targets == good
    assert "DNS lookup failed" in caplog.text and "keeping the last good answer" in caplog.text
    server.failing = False
    server.set("_sip._udp.trunk.test", "SRV", 5, ["10 0 5070 backup.trunk.test."])
    assert await resolver.refresh(106.0 + 5.0)  # retried after the TTL, then the new answer
    assert resolver.targets == (Target("udp", "127.0.0.6", 5070),)


async def test_the_background_task_hands_over_new_targets_after_the_ttl(
    server: LoopbackDns,
) -> None:
    two_srv_targets(server, ttl=1)
    resolver = TrunkResolver([TrunkSpec("udp", "trunk.test", None)], server.address)
    await resolver.refresh()
    server.set("_sip._udp.trunk.test", "SRV", 1, ["10 0 5070 backup.trunk.test."])
    handed: asyncio.Queue[tuple[Target, ...]] = asyncio.Queue()
    task = asyncio.create_task(resolver.run(handed.put_nowait))
    try:
        targets = await asyncio.wait_for(handed.get(), timeout=5.0)
    finally:
        task.cancel()
    assert targets == (Target("udp", "127.0.0.6", 5070),)
