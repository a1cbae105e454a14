"""`callerid-proxy run`: settings from flags (and an optional YAML config file), then serve."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from proxy.active_rules import ActiveRules
from proxy.server import ProxyServer, ServerSettings
from proxy.sip.addresses import Target
from proxy.sip.policy import IPNetwork, ProxyConfig

log = logging.getLogger("callerid_proxy")
SECRET_ENV = "CALLERID_PROXY_SECRET"
_LIST_KEYS = ("listen", "trunk", "trusted", "large_over_tcp")
_KEYS = (
    "rules", "listen", "pbx", "trunk", "trusted", "pid_file", "log_level", "secret", "advertise",
    "max_message", "tcp_idle_timeout", "admin", "advertise_pbx", "advertise_trunk",
    "max_transactions", "max_dialogs", "max_loop_lag", "no_answer_timeout", "failover_statuses",
    "probe_interval", "probe_failures", "probe_successes", "round_robin", "large_over_tcp",
)


class SettingsError(Exception):
    pass


def add_run_command(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "run", help="run the proxy between the PBX and the trunk"
    )
    parser.add_argument("--config", type=Path, help="YAML file with the same settings; flags win")
    parser.add_argument("--rules", type=Path, help="caller-ID rules file")
    parser.add_argument("--listen", action="append", metavar="HOST:PORT",
                        help="UDP and TCP address to listen on (repeatable)")
    parser.add_argument("--pbx", metavar="[udp:|tcp:]HOST:PORT", help="where inbound calls go")
    parser.add_argument("--trunk", action="append", metavar="[udp:|tcp:]HOST:PORT",
                        help="where outbound calls go (first one); repeatable")
    parser.add_argument("--trusted", action="append", metavar="CIDR",
                        help="extra sources allowed to place outbound calls (repeatable)")
    parser.add_argument("--advertise", metavar="HOST", help="address put in Via/Record-Route")
    parser.add_argument("--advertise-pbx", metavar="HOST",
                        help="address the PBX side is shown (e.g. a LAN address), if different")
    parser.add_argument("--advertise-trunk", metavar="HOST",
                        help="address the trunk side is shown (e.g. a public or NAT address)")
    parser.add_argument("--pid-file", type=Path, help="default: callerid-proxy.pid")
    parser.add_argument("--secret", help=f"HMAC secret (else ${SECRET_ENV}, else random)")
    parser.add_argument("--log-level", help="debug, info, warning, error (default info)")
    parser.add_argument("--admin", metavar="HOST:PORT",
                        help="admin HTTP endpoint (/metrics, /status, POST /reload); loopback")
    parser.add_argument("--max-message", type=int, help="TCP message size cap (default 65536)")
    parser.add_argument("--tcp-idle-timeout", type=float, help="seconds (default 120)")
    parser.add_argument("--max-transactions", type=int,
                        help="live server transactions above which new INVITEs get 503 "
                        "(default 20000)")
    parser.add_argument("--max-dialogs", type=int,
                        help="dialogs remembered for peers that drop Record-Route (default 100000)")
    parser.add_argument("--no-answer-timeout", type=float,
                        help="seconds without even a provisional before the next trunk is tried "
                        "(default 2; 0: only Timer B)")
    parser.add_argument("--failover-statuses", metavar="CODES",
                        help="trunk final responses that fail over (default 408,500,502,503,504)")
    parser.add_argument("--probe-interval", type=float,
                        help="seconds between OPTIONS keepalives to each trunk (default: none)")
    parser.add_argument("--probe-failures", type=int,
                        help="unanswered keepalives in a row before a trunk is down (default 3)")
    parser.add_argument("--probe-successes", type=int,
                        help="answered keepalives in a row before it is up again (default 2)")
    parser.add_argument("--round-robin", action="store_const", const=True,
                        help="start each new outbound call at the next trunk (default: in order)")
    parser.add_argument("--large-over-tcp", action="append", choices=("pbx", "trunk"),
                        help="that side's UDP peer also takes TCP: requests over 1300 bytes go "
                        "there over TCP (RFC 3261 18.1.1); repeatable")
    parser.add_argument("--max-loop-lag", type=float,
                        help="event-loop lag in seconds above which new INVITEs get 503 "
                        "(default 0.1)")
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    try:
        settings = merged_settings(args)
        configure_logging(str(settings.get("log_level") or "info"))
        config, server_settings, rules_path = build_settings(settings)
    except SettingsError as error:
        print(f"callerid-proxy run: {error}", file=sys.stderr)
        return 2
    try:
        active = ActiveRules.load(rules_path)
    except Exception as error:  # RulesError lists every problem with file:line
        print(f"callerid-proxy run: rules refused:\n{error}", file=sys.stderr)
        return 1
    _install_uvloop()
    try:
        asyncio.run(_serve(config, active, server_settings))
    except OSError as error:  # typically: the listen address is taken or not ours
        print(f"callerid-proxy run: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0


async def _serve(config: ProxyConfig, active: ActiveRules, settings: ServerSettings) -> None:
    server = ProxyServer(config, active, settings)
    await server.start()
    # Start-up objects (rules, phonenumbers metadata) never die: keep them out of every GC pass,
    # and collect young objects less often, so no pause lets the UDP buffer overflow.
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    await server.serve_until_stopped()


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        log.info("uvloop not installed: using the standard asyncio loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def merged_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if args.config is not None:
        settings.update(_read_config(args.config))
    for key in _KEYS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    return settings


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SettingsError(f"cannot read config {path}: {error}") from error
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise SettingsError(f"{path}: unknown settings {', '.join(unknown)}")
    for key in _LIST_KEYS:
        if key in data and not isinstance(data[key], list):
            data[key] = [data[key]]
    for key in ("rules", "pid_file"):
        if key in data:
            data[key] = (path.parent / str(data[key])) if not Path(str(data[key])).is_absolute() \
                else Path(str(data[key]))
    return data


def build_settings(settings: dict[str, Any]) -> tuple[ProxyConfig, ServerSettings, Path]:
    for key in ("rules", "pbx", "trunk"):
        if not settings.get(key):
            raise SettingsError(f"--{key} is required")
    listen = [parse_hostport(str(item)) for item in settings.get("listen") or ["127.0.0.1:5060"]]
    trunks = [parse_target(str(item)) for item in settings["trunk"]]
    pbx = parse_target(str(settings["pbx"]))
    sides = tuple(
        _resolve(str(settings[key])) if settings.get(key) else None
        for key in ("advertise_pbx", "advertise_trunk")
    )
    advertised = _advertised(listen, settings.get("advertise"), sides)
    config = ProxyConfig(
        advertised=advertised,
        pbx=pbx,
        trunk=trunks[0],
        extra_trunks=tuple(trunks[1:]),
        secret=_secret(settings.get("secret")),
        trusted=tuple(_network(str(item)) for item in settings.get("trusted") or []),
        pbx_facing=sides[0],
        trunk_facing=sides[1],
        max_transactions=_positive_int(settings, "max_transactions", 20_000),
        max_dialogs=_positive_int(settings, "max_dialogs", 100_000),
        no_answer_timeout=_no_answer_timeout(settings.get("no_answer_timeout")),
        failover_statuses=_failover_statuses(settings.get("failover_statuses")),
        probe_interval=_probe_interval(settings.get("probe_interval")),
        probe_failures=_positive_int(settings, "probe_failures", 3),
        probe_successes=_positive_int(settings, "probe_successes", 2),
        round_robin=bool(settings.get("round_robin")),
        large_over_tcp=_sides(settings.get("large_over_tcp")),
    )
    server_settings = ServerSettings(
        listen=tuple(listen),
        pid_file=Path(settings.get("pid_file") or "callerid-proxy.pid"),
        max_message=int(settings.get("max_message") or 64 * 1024),
        tcp_idle_timeout=float(settings.get("tcp_idle_timeout") or 120.0),
        admin=parse_hostport(str(settings["admin"])) if settings.get("admin") else None,
        max_loop_lag=float(settings.get("max_loop_lag") or 0.1),
    )
    return config, server_settings, Path(settings["rules"])


def _no_answer_timeout(value: object) -> float | None:
    if value is None:
        return 2.0
    try:
        seconds = float(str(value))
    except ValueError as error:
        raise SettingsError(f"--no-answer-timeout: expected seconds, got {value!r}") from error
    return seconds if seconds > 0 else None


def _sides(value: object) -> frozenset[str]:
    sides = frozenset(str(item) for item in (value if isinstance(value, list) else []))
    unknown = sorted(sides - {"pbx", "trunk"})
    if unknown:
        raise SettingsError(f"--large-over-tcp: expected pbx or trunk, got {', '.join(unknown)}")
    return sides


def _probe_interval(value: object) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(str(value))
    except ValueError as error:
        raise SettingsError(f"--probe-interval: expected seconds, got {value!r}") from error
    if seconds <= 0:
        raise SettingsError(f"--probe-interval must be positive, got {value!r}")
    return seconds


def _failover_statuses(value: object) -> frozenset[int]:
    if value is None:
        return frozenset((408, 500, 502, 503, 504))
    items = value if isinstance(value, list) else str(value).split(",")
    codes = [str(item).strip() for item in items]
    if not codes or not all(c.isdigit() and 300 <= int(c) <= 699 for c in codes):
        raise SettingsError(f"--failover-statuses: expected codes 300-699, got {value!r}")
    return frozenset(int(c) for c in codes)


def _positive_int(settings: dict[str, Any], key: str, default: int) -> int:
    value = settings.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"--{key.replace('_', '-')} must be a positive integer, got {value!r}")
    return value


def _advertised(
    listen: list[tuple[str, int]], advertise: object, sides: tuple[str | None, ...]
) -> tuple[Target, ...]:
    """Every address of ours a peer may see (Via, Record-Route, Route), per transport."""
    targets: list[Target] = []
    for host, port in listen:
        shown = str(advertise) if advertise else host
        if ipaddress.ip_address(shown).is_unspecified:
            if not all(sides):
                raise SettingsError(
                    f"listening on {host}: give --advertise (or --advertise-pbx and "
                    "--advertise-trunk) with reachable addresses"
                )
            continue  # the wildcard is shown as the per-side addresses below
        targets += [Target("udp", shown, port), Target("tcp", shown, port)]
    for side_host in sides:
        if side_host is None or any(t.host == side_host for t in targets):
            continue
        v6 = ":" in side_host
        port = next((p for h, p in listen if (":" in h) == v6), listen[0][1])
        targets += [Target("udp", side_host, port), Target("tcp", side_host, port)]
    return tuple(targets)


def _secret(value: object) -> bytes:
    text = str(value) if value else os.environ.get(SECRET_ENV, "")
    if text:
        return text.encode()
    log.warning(
        "no --secret and no %s: using a random secret; after a restart, in-dialog requests of "
        "calls set up before it cannot be restored and are refused", SECRET_ENV,
    )
    return secrets.token_bytes(32)


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as error:
        raise SettingsError(f"invalid --trusted {text!r}: {error}") from error


def parse_hostport(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT; a host name is resolved once, here, to an IP literal."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SettingsError(f"expected HOST:PORT, got {text!r}")
    return _resolve(host), int(port_text)


def parse_target(text: str) -> Target:
    transport = "udp"
    lowered = text.lower()
    for prefix in ("udp:", "tcp:"):
        if lowered.startswith(prefix):
            transport, text = prefix[:3], text[4:]
    host, port = parse_hostport(text)
    return Target(transport, host, port)


def _resolve(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as error:
        raise SettingsError(f"cannot resolve {host!r}: {error}") from error
    return str(infos[0][4][0])
