"""Admin endpoint on a loopback address: Prometheus metrics, status, and reload.

GET /metrics (Prometheus text), GET /status (JSON), POST /reload (JSON outcome). Deliberately tiny:
HTTP/1.0, one request per connection, no body parsing. Bind it to loopback only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("callerid_proxy.admin")
StatusSource = Callable[[], dict[str, Any]]
ReloadAction = Callable[[], dict[str, Any]]


class CoreCollector(Collector):
    """Exposes the core's counters at scrape time; nothing is recorded per packet."""

    def __init__(self, status: StatusSource) -> None:
        self._status = status

    def collect(self) -> Iterator[Any]:
        status = self._status()
        events = CounterMetricFamily(
            "callerid_proxy_events", "SIP events seen by the proxy core", labels=["event"]
        )
        for event, count in sorted(status["counters"].items()):
            events.add_metric([event], count)
        yield events
        transactions = GaugeMetricFamily("callerid_proxy_transactions", "Live transactions")
        transactions.add_metric([], status["transactions"])
        yield transactions
        info = InfoMetricFamily("callerid_proxy_rules", "Rules version in force")
        info.add_metric([], {"version": status["active_version"]})
        yield info


class AdminServer:
    def __init__(
        self, status: StatusSource, reload: ReloadAction, collectors: tuple[Collector, ...] = ()
    ) -> None:
        self._status = status
        self._reload = reload
        self._registry = CollectorRegistry()
        self._registry.register(CoreCollector(status))
        for collector in collectors:
            self._registry.register(collector)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)
        log.info("admin endpoint on http://%s:%d/ (metrics, status, reload)", host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
            method, path = self._request_line(head)
            status, content_type, body = self._respond(method, path)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        try:
            await writer.drain()
        finally:
            writer.close()

    @staticmethod
    def _request_line(head: bytes) -> tuple[str, str]:
        method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        return method, path.split("?", 1)[0]

    def _respond(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method == "GET" and path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4", generate_latest(self._registry)
        if method == "GET" and path == "/status":
            return "200 OK", "application/json", _json(self._status())
        if method == "POST" and path == "/reload":
            outcome = self._reload()
            code = "200 OK" if outcome["ok"] else "422 Unprocessable Entity"
            return code, "application/json", _json(outcome)
        return "404 Not Found", "text/plain", b"not found\n"


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
