"""Admin endpoint on a loopback address: Prometheus metrics, status, and reload.

GET /metrics (Prometheus text), GET /status (JSON), GET /healthz and /readyz (probes), POST /reload
(JSON outcome). Deliberately tiny: HTTP/1.0, one request per connection, no body parsing.
Guarded against a browser on the admin's machine (Origin, Host) and, off loopback, by a token.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from proxy.tcp_accept import Acceptor

log = logging.getLogger("callerid_proxy.admin")
StatusSource = Callable[[], dict[str, Any]]
ReloadAction = Callable[[], Awaitable[dict[str, Any]]]


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
        transport = CounterMetricFamily(
            "callerid_proxy_transport_events",
            "TCP limits at work: refused by cap, closed, accept failures", labels=["event"],
        )
        for event, count in sorted(status.get("transport", {}).items()):
            transport.add_metric([event], count)
        yield transport
        transactions = GaugeMetricFamily("callerid_proxy_transactions", "Live transactions")
        transactions.add_metric([], status["transactions"])
        yield transactions
        reloads = CounterMetricFamily(
            "callerid_proxy_reloads", "Rules reloads by outcome (applied, refused)",
            labels=["outcome"],
        )
        for result in ("applied", "refused"):
            reloads.add_metric([result], status.get("reloads", {}).get(result, 0))
        yield reloads
        connections = GaugeMetricFamily(
            "callerid_proxy_connections", "Open TCP and TLS connections", labels=["transport"]
        )
        by_transport = status.get("connections_by_transport", {})
        for kind in ("tcp", "tls"):
            connections.add_metric([kind], by_transport.get(kind, 0))
        yield connections
        info = InfoMetricFamily("callerid_proxy_rules", "Rules version in force")
        info.add_metric([], {"version": status["active_version"]})
        yield info


ADMIN_TOKEN_ENV = "CALLERID_PROXY_ADMIN_TOKEN"
OPEN_PATHS = ("/healthz", "/readyz")  # probes: answered to any client, they reveal nothing
READ_PATHS = ("/metrics", "/status")  # without a token only when bound to loopback
MAX_HEAD = 8192


class AdminConfigError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def check_binding(host: str, token: str | None) -> None:
    """Refuse, at start, an admin endpoint reachable from other hosts without a token."""
    if not is_loopback(host) and not token:
        raise AdminConfigError(
            f"--admin {host} is not a loopback address: give --admin-token (or "
            f"${ADMIN_TOKEN_ENV}), or bind the admin endpoint to 127.0.0.1 / ::1"
        )


def host_check(host: str, port: int) -> Callable[[str], bool]:
    """Which Host header values are accepted: the bound address, plus `localhost:PORT` when bound
    to loopback (what a browser or curl on the box sends); on a wildcard bind (0.0.0.0, ::) any
    IP literal with our port. A host *name* other than localhost is what a DNS-rebinding page
    sends, and is refused."""
    shown = f"[{host}]" if ":" in host else host
    names = {f"{shown}:{port}".lower()}
    if is_loopback(host):
        names.add(f"localhost:{port}")
    wildcard = _is_unspecified(host)

    def accepted(value: str) -> bool:
        value = value.strip().lower()
        if value in names:
            return True
        if not wildcard:
            return False
        literal, _, value_port = value.rpartition(":")
        return value_port == str(port) and _is_ip(literal.strip("[]"))

    return accepted


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_unspecified(host: str) -> bool:
    return _is_ip(host) and ipaddress.ip_address(host).is_unspecified


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


Answer = tuple[str, str, bytes]
ReadyProbe = Callable[[], tuple[bool, dict[str, Any]]]
HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]


class AdminServer:
    """Every request is checked in this order: Origin (any: 403, a browser page is talking to
    us), Host (not the bound address: 403), then the token for state changes (POST) and, on an
    endpoint not bound to loopback, for /metrics and /status too."""

    def __init__(
        self,
        status: StatusSource,
        reload: ReloadAction,
        *,
        token: str | None = None,
        health: HealthProbe | None = None,
        ready: ReadyProbe | None = None,
        collectors: tuple[Collector, ...] = (),
    ) -> None:
        self._status = status
        self._reload = reload
        self._token = token.encode() if token else None
        self._health = health or (lambda: (True, {}))
        self._ready = ready or (lambda: (True, {}))
        self._registry = CollectorRegistry()
        self._registry.register(CoreCollector(status))
        for collector in collectors:
            self._registry.register(collector)
        self._acceptor: Acceptor | None = None
        self.counters: Counter[str] = Counter()
        self._host_ok: Callable[[str], bool] = lambda _: False
        self._loopback = True

    def register(self, collector: Collector) -> None:
        """Expose one more collector's metrics at /metrics (e.g. the GC pause monitor)."""
        self._registry.register(collector)

    async def start(self, host: str, port: int) -> None:
        check_binding(host, self._token.decode() if self._token else None)
        self._host_ok = host_check(host, port)
        self._loopback = is_loopback(host)
        # Accepted by hand like SIP (tcp_accept.py): out of descriptors, uvloop would close a
        # create_server listener for good; this one pauses and comes back.
        self._acceptor = Acceptor(None, self._protocol, self.counters)
        self._acceptor.listen(host, port)
        auth = "token required for POST" if self._token else "no token: POST refused"
        log.info("admin endpoint on http://%s:%d/ (metrics, status, reload, healthz, readyz; %s)",
                 host, port, auth)

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()

    def _protocol(self, _host: str) -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader(limit=MAX_HEAD)
        return asyncio.StreamReaderProtocol(reader, self._handle)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        extra = ""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
            request = _parse_head(head)
            refusal = self._refusal(request)
            status, content_type, body = refusal or await self._respond(request)
            if status.startswith("401"):
                extra = 'WWW-Authenticate: Bearer realm="callerid-proxy"\r\n'
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        except OSError:
            writer.close()
            return
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        try:
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def _refusal(self, request: Request) -> Answer | None:
        if "origin" in request.headers:
            return _text("403 Forbidden", "cross-origin requests are refused\n")
        if not self._host_ok(request.headers.get("host", "")):
            return _text("403 Forbidden", "Host header does not name this endpoint\n")
        if request.path in OPEN_PATHS and request.method == "GET":
            return None
        needs_token = request.method != "GET" or not self._loopback
        if needs_token and not self._authorised(request):
            if self._token is None:
                return _text("403 Forbidden", "no --admin-token configured: state changes "
                                              "are refused (use SIGHUP / apply --pid-file)\n")
            return _text("401 Unauthorized", "a valid Authorization: Bearer token is required\n")
        return None

    def _authorised(self, request: Request) -> bool:
        if self._token is None:
            return False
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self._token)

    async def _respond(self, request: Request) -> Answer:
        method, path = request.method, request.path
        if method == "GET" and path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4", generate_latest(self._registry)
        if method == "GET" and path == "/status":
            return "200 OK", "application/json", _json(self._status())
        if method == "GET" and path in OPEN_PATHS:
            ok, detail = (self._health if path == "/healthz" else self._ready)()
            code = "200 OK" if ok else "503 Service Unavailable"
            return code, "application/json", _json({"ok": ok, **detail})
        if method == "POST" and path == "/reload":
            outcome = await self._reload()
            code = "200 OK" if outcome["ok"] else "422 Unprocessable Entity"
            return code, "application/json", _json(outcome)
        return _text("404 Not Found", "not found\n")


def _parse_head(head: bytes) -> Request:
    """Raises ValueError for anything that is not `METHOD PATH VERSION` plus header lines."""
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("header line without a colon")
        headers[name.strip().lower()] = value.strip()
    return Request(method, path.split("?", 1)[0], headers)


def _text(status: str, text: str) -> Answer:
    return status, "text/plain", text.encode()


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
