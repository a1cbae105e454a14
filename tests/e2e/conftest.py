"""Fixtures for the SIPp end-to-end tests: the rules file and `callerid-proxy run` on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.e2e.calls import loopback
from tests.e2e.ports import free_port
from tests.e2e.proxy_process import DEFAULT_SECRET, Endpoint, ProxyProcess
from tests.e2e.sipp import SIPP

EXAMPLE_RULES = """\
country: BE
numbers:
  - "+3228880000"
  - "+3228880001"
  - number: "+442071234567"
    name: "ACME UK"
  - "+33144556677"
default_outgoing_number: "+3228880000"
users:
  "1001": "+3228880001"
  "1002": default
advanced_rules:
  apply_to_users_with_own_number: false
  rules:
    - destination_prefix: "0044"
      number: "+442071234567"
    - destination_prefix: "0033"
      number: "+33144556677"
"""

StartProxy = Callable[..., ProxyProcess]


@pytest.fixture(autouse=True)
def _require_sipp() -> None:
    if SIPP is None:
        pytest.skip("sipp is not on PATH (install Debian's sip-tester: bash scripts/test.sh does)")


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(EXAMPLE_RULES)
    return path


@pytest.fixture
def start_proxy(tmp_path: Path, rules_file: Path) -> Iterator[StartProxy]:
    """Start a proxy on free loopback ports; `transport` applies to both its PBX and its trunk.

    `same_ports_as` starts it instead on the listen, PBX and trunk addresses of an earlier proxy
    (stopped first: a restart); `secret` is its --secret; `extra_trunks` are more `--trunk`s
    after the first, for failover (a restart keeps the earlier proxy's unless given). At teardown
    every proxy gets SIGTERM and must exit 0.
    """
    started: list[ProxyProcess] = []

    def start(
        transport: str = "udp",
        trusted: Sequence[str] = (),
        *,
        secret: str = DEFAULT_SECRET,
        same_ports_as: ProxyProcess | None = None,
        extra_trunks: Sequence[Endpoint] = (),
    ) -> ProxyProcess:
        if same_ports_as is None:
            listen = loopback(free_port())
            pbx, trunk = loopback(free_port(), transport), loopback(free_port(), transport)
            name = "proxy"
        else:
            listen, pbx, trunk = same_ports_as.listen, same_ports_as.pbx, same_ports_as.trunk
            extra_trunks = extra_trunks or same_ports_as.extra_trunks
            name = f"proxy{len(started) + 1}"
        proxy = ProxyProcess(
            workdir=tmp_path,
            rules=rules_file,
            listen=listen,
            pbx=pbx,
            trunk=trunk,
            trusted=trusted,
            secret=secret,
            name=name,
            extra_trunks=extra_trunks,
        )
        started.append(proxy)
        proxy.start()
        return proxy

    yield start
    failures = []
    for proxy in started:
        code = proxy.stop()
        if code != 0:
            failures.append(f"proxy exited with {code} on SIGTERM\n{proxy.log_tail()}")
    assert not failures, "\n".join(failures)
