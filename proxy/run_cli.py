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
from proxy.sip.untrusted import UNTRUSTED_MODES

log = logging.getLogger("callerid_proxy")
SECRET_ENV = "CALLERID_PROXY_SECRET"
_LIST_KEYS = ("listen", "trunk", "trusted")
_KEYS = (
    "rules", "listen", "pbx", "trunk", "trusted", "pid_file", "log_level", "secret", "advertise",
    "max_message", "tcp_idle_timeout", "admin", "advertise_pbx", "advertise_trunk", "untrusted",
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
    parser.add_argument("--untrusted", choices=UNTRUSTED_MODES,
                        help="requests from other sources: a short 403 (reply, default) or none")
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
        untrusted=_untrusted_mode(settings.get("untrusted")),
    )
    server_settings = ServerSettings(
        listen=tuple(listen),
        pid_file=Path(settings.get("pid_file") or "callerid-proxy.pid"),
        max_message=int(settings.get("max_message") or 64 * 1024),
        tcp_idle_timeout=float(settings.get("tcp_idle_timeout") or 120.0),
        admin=parse_hostport(str(settings["admin"])) if settings.get("admin") else None,
    )
    return config, server_settings, Path(settings["rules"])


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


def _untrusted_mode(value: object) -> str:
    mode = str(value or "reply")
    if mode not in UNTRUSTED_MODES:
        raise SettingsError(f"invalid untrusted {mode!r}: reply or drop")
    return mode
