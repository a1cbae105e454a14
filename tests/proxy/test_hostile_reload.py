"""Reloads are parsed off the loop, serialised and coalesced: reload spam cannot stall SIP."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from proxy.active_rules import ActiveRules, ReloadOutcome
from proxy.reloader import Reloader
from tests.proxy.hostile_support import (
    ATTACKER,
    UdpPeer,
    options,
    running_proxy,
    wait_for,
)

NUMBERS = [f"+32288{n:05d}" for n in range(100)]


def big_rules(users: int = 10_000, rules: int = 500) -> str:
    lines = ['country: "BE"', "numbers:", *(f'  - "{n}"' for n in NUMBERS)]
    lines += [f'default_outgoing_number: "{NUMBERS[0]}"', "users:"]
    lines += [f'  "{100000 + i}": "{NUMBERS[i % 100]}"' for i in range(users)]
    lines += ["advanced_rules:", "  apply_to_users_with_own_number: false", "  rules:"]
    for i in range(rules):
        lines += [f'    - destination_prefix: "+44{i:04d}"', f'      number: "{NUMBERS[i % 100]}"']
    return "\n".join(lines) + "\n"


async def _ticking(counter: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        counter[0] += 1
        await asyncio.sleep(0.002)


async def test_a_10000_user_reload_leaves_the_loop_answering(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(big_rules())
    active = ActiveRules.load(path)
    path.write_text(big_rules().replace('"100000": "+3228800000"', '"100000": "+3228800001"'))
    outcomes: list[ReloadOutcome] = []
    reloader = Reloader(active, outcomes.append)
    ticks, stop = [0], asyncio.Event()
    ticker = asyncio.get_running_loop().create_task(_ticking(ticks, stop))
    await asyncio.sleep(0.01)
    started, before = time.monotonic(), ticks[0]
    outcome = await asyncio.wait_for(reloader.reload(), timeout=60)
    elapsed, during = time.monotonic() - started, ticks[0] - before
    stop.set()
    await ticker
    assert outcome.ok and outcomes == [outcome]
    assert active.current.version == outcome.version
    assert active.decide("100000", "0032").number == "+3228800001"
    # The parse took a while (tens of ms or more); the loop kept turning meanwhile. Generous:
    # at least a few ticks, and a tick for each 50 ms the reload took.
    assert during >= max(3, int(elapsed / 0.05)), (during, elapsed)


async def test_reload_requests_during_a_reload_coalesce_into_one_more(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(big_rules(users=3000))
    active = ActiveRules.load(path)
    outcomes: list[ReloadOutcome] = []
    reloader = Reloader(active, outcomes.append)
    first = asyncio.ensure_future(reloader.reload())
    await asyncio.sleep(0)
    for _ in range(50):  # SIGHUP spam while the first one parses
        reloader.request()
    late = [asyncio.ensure_future(reloader.reload()) for _ in range(5)]
    results = await asyncio.wait_for(asyncio.gather(first, *late), timeout=60)
    assert reloader.started == 2 and len(outcomes) == 2
    assert all(result.ok for result in results)
    assert all(result is outcomes[1] for result in results[1:])  # they share the second


async def test_a_refused_reload_keeps_the_rules_and_reports_the_errors(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(big_rules(users=10))
    active = ActiveRules.load(path)
    version = active.current.version
    path.write_text(big_rules(users=10) + "bogus: 1\n")
    outcome = await Reloader(active, lambda _: None).reload()
    assert not outcome.ok and any("bogus" in error for error in outcome.errors)
    assert active.current.version == version
    path.unlink()
    outcome = await Reloader(active, lambda _: None).reload()
    assert not outcome.ok and active.current.version == version


def test_sighup_spam_on_the_live_proxy_is_coalesced_and_sip_keeps_answering(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "big.yaml"
    rules.write_text(big_rules())
    with running_proxy(tmp_path, rules=rules) as proxy:
        attacker = UdpPeer(ATTACKER, (proxy.pbx.proxy[0], proxy.port))
        try:
            for _ in range(40):
                os.kill(proxy.process.pid, signal.SIGHUP)
            attacker.send(options("during-reload", transport="UDP"))
            answer = attacker.receive(timeout=10)
            assert answer.startswith(b"SIP/2.0 403"), answer[:80]
            wait_for(lambda: proxy.status()["reload_seq"] >= 1, "the reloads to finish")
            time.sleep(1.0)  # any coalesced one still running
            status = proxy.status()
            proxy.alive()
        finally:
            attacker.close()
    assert 1 <= status["reloads_parsed"] < 40, status
    assert status["reload_seq"] == status["reloads_parsed"]
