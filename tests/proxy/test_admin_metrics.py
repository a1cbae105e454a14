"""The admin /metrics families read from the server's status (issue 8 item 5): rules reloads by
outcome and open TCP/TLS connections by transport, next to the core's counters."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from proxy.admin import CoreCollector

STATUS: dict[str, Any] = {
    "counters": {"received": 7},
    "transport": {"tcp_accept_failed": 1},
    "transactions": 3,
    "active_version": "95e1625f631d",
    "reloads": {"applied": 2, "refused": 1},
    "connections_by_transport": {"tcp": 4, "tls": 1},
}


def scrape(status: dict[str, Any]) -> str:
    registry = CollectorRegistry()
    registry.register(CoreCollector(lambda: status))
    return generate_latest(registry).decode()


def test_reloads_and_connections_are_exposed() -> None:
    text = scrape(STATUS)
    assert 'callerid_proxy_reloads_total{outcome="applied"} 2.0' in text
    assert 'callerid_proxy_reloads_total{outcome="refused"} 1.0' in text
    assert 'callerid_proxy_connections{transport="tcp"} 4.0' in text
    assert 'callerid_proxy_connections{transport="tls"} 1.0' in text
    assert 'callerid_proxy_rules_info{version="95e1625f631d"} 1.0' in text


def test_a_proxy_that_never_reloaded_shows_zeroes() -> None:
    status = {key: value for key, value in STATUS.items()
              if key not in ("reloads", "connections_by_transport")}
    text = scrape(status)
    assert 'callerid_proxy_reloads_total{outcome="refused"} 0.0' in text
    assert 'callerid_proxy_connections{transport="tls"} 0.0' in text
