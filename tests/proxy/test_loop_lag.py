"""The glue measures event-loop lag with one periodic callback and tells the core: a loop blocked
past `max_loop_lag` sheds new INVITEs, and admission resumes once the lag is gone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from proxy.active_rules import ActiveRules
from proxy.server import ProxyServer, ServerSettings
from proxy.sip.addresses import Target
from proxy.sip.policy import ProxyConfig

ROOT = Path(__file__).resolve().parents[2]


async def _lag_and_recover(tmp_path: Path) -> list[bool]:
    config = ProxyConfig(
        advertised=(Target("udp", "127.0.0.1", 5060),),
        pbx=Target("udp", "127.0.0.1", 5070),
        trunk=Target("udp", "127.0.0.1", 5080),
        secret=b"s",
    )
    settings = ServerSettings(
        listen=(("127.0.0.1", 5060),), pid_file=tmp_path / "p.pid", max_loop_lag=0.1,
        lag_interval=0.02,
    )
    server = ProxyServer(config, ActiveRules.load(ROOT / "rules" / "example.yaml"), settings)
    seen = [server.core.overloaded]
    server._schedule_lag_check()
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # one stall (a GC pass, the scheduler): not yet overload
    await asyncio.sleep(0.01)
    seen.append(server.core.overloaded)
    time.sleep(0.3)  # stalled again at the next check: overloaded
    await asyncio.sleep(0.01)
    seen.append(server.core.overloaded)
    assert server.status()["loop_lag"] > 0.1
    await asyncio.sleep(0.2)  # checks on time again
    seen.append(server.core.overloaded)
    await server.stop()
    return seen


def test_loop_lag_sets_and_clears_overload(tmp_path: Path) -> None:
    assert asyncio.run(_lag_and_recover(tmp_path)) == [False, False, True, False]
