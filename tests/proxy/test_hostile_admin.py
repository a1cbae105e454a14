"""The admin endpoint against a browser page and other outsiders (real process), and its probes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.admin import check_binding, host_check
from proxy.loop_health import STALE_AFTER, TICK_INTERVAL, LoopTicker
from tests.e2e.ports import free_port
from tests.proxy.hostile_support import RULES, TOKEN, RunningProxy, running_proxy

NO_TOKEN_ENV = {k: v for k, v in os.environ.items() if k != "CALLERID_PROXY_ADMIN_TOKEN"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with running_proxy(tmp_path_factory.mktemp("admin")) as running:
        yield running


def test_reload_needs_the_bearer_token(proxy: RunningProxy) -> None:
    assert proxy.http("POST", "/reload")[0] == 401
    assert proxy.http("POST", "/reload", {"Authorization": "Bearer wrong"})[0] == 401
    assert proxy.http("POST", "/reload", {"Authorization": f"Basic {TOKEN}"})[0] == 401
    code, body = proxy.http("POST", "/reload", AUTH)
    assert code == 200 and json.loads(body)["ok"] is True


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1"])
def test_any_origin_is_refused_even_with_the_token(proxy: RunningProxy, origin: str) -> None:
    for method, path in (("POST", "/reload"), ("GET", "/status"), ("GET", "/metrics")):
        code, _ = proxy.http(method, path, {**AUTH, "Origin": origin})
        assert code == 403, (method, path)


@pytest.mark.parametrize(
    "host", ["evil.example", f"evil.example:{1}", "127.0.0.2:{port}", "localhost.evil:{port}", ""]
)
def test_a_host_header_other_than_the_bound_address_is_refused(
    proxy: RunningProxy, host: str
) -> None:
    value = host.format(port=proxy.admin[1])
    assert proxy.http("POST", "/reload", {**AUTH, "Host": value})[0] == 403
    assert proxy.http("GET", "/status", {"Host": value})[0] == 403


def test_reads_work_without_a_token_on_loopback_also_as_localhost(proxy: RunningProxy) -> None:
    assert proxy.http("GET", "/status")[0] == 200
    assert proxy.http("GET", "/metrics", {"Host": f"localhost:{proxy.admin[1]}"})[0] == 200


def test_healthz_and_readyz(proxy: RunningProxy) -> None:
    code, body = proxy.http("GET", "/healthz")
    health = json.loads(body)
    assert code == 200 and health["ok"] is True
    assert 0 <= health["loop_tick_age_s"] < STALE_AFTER
    code, body = proxy.http("GET", "/readyz")
    ready = json.loads(body)
    assert code == 200 and ready["ok"] is True and ready["trunks_up"] == 1
    assert ready["rules_version"] == proxy.status()["active_version"]


def test_a_non_loopback_admin_without_a_token_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--rules", str(RULES),
         "--listen", f"127.0.0.1:{free_port()}", "--pbx", "127.0.0.1:5070",
         "--trunk", "127.0.0.1:5080", "--pid-file", str(tmp_path / "p.pid"), "--secret", "s",
         "--admin", f"0.0.0.0:{free_port()}"],
        capture_output=True, text=True, timeout=30, env=NO_TOKEN_ENV,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--admin 0.0.0.0 is not a loopback address: give --admin-token" in result.stderr


def test_off_loopback_reads_need_the_token_too_and_names_are_refused(tmp_path: Path) -> None:
    port = free_port()
    with running_proxy(tmp_path, ["--admin", f"0.0.0.0:{port}"]) as proxy:
        proxy.admin = ("127.0.0.1", port)
        assert proxy.http("GET", "/status")[0] == 401
        assert proxy.http("GET", "/status", AUTH)[0] == 200
        assert proxy.http("GET", "/healthz")[0] == 200  # probes stay open: they reveal nothing
        assert proxy.http("GET", "/status", {**AUTH, "Host": f"rebind.example:{port}"})[0] == 403


def test_binding_rules_and_host_check_table() -> None:
    check_binding("127.0.0.1", None)
    check_binding("::1", None)
    check_binding("10.0.0.1", "t")
    with pytest.raises(ValueError, match="not a loopback address"):
        check_binding("10.0.0.1", None)
    cases = [
        ("127.0.0.1", "127.0.0.1:9060", True),
        ("127.0.0.1", "LOCALHOST:9060", True),
        ("127.0.0.1", "localhost:9061", False),
        ("127.0.0.1", "127.0.0.1", False),
        ("::1", "[::1]:9060", True),
        ("::1", "localhost:9060", True),
        ("10.0.0.1", "10.0.0.1:9060", True),
        ("10.0.0.1", "localhost:9060", False),
        ("0.0.0.0", "192.0.2.7:9060", True),
        ("0.0.0.0", "[2001:db8::1]:9060", True),
        ("0.0.0.0", "attacker.example:9060", False),
    ]
    for bound, header, accepted in cases:
        assert host_check(bound, 9060)(header) is accepted, (bound, header)


async def test_healthz_reads_a_loop_tick_so_a_stalled_loop_shows() -> None:
    ticker = LoopTicker()
    ticker.start()
    try:
        await asyncio.sleep(TICK_INTERVAL * 3)
        assert ticker.responsive() and ticker.ticks >= 2
        time.sleep(STALE_AFTER + 0.2)  # the loop is blocked: no tick can run
        assert not ticker.responsive()
        await asyncio.sleep(TICK_INTERVAL * 2)
        assert ticker.responsive() and ticker.max_lag >= STALE_AFTER - TICK_INTERVAL
    finally:
        ticker.stop()
