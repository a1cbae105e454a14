"""`callerid-proxy run`: settings from flags (and an optional YAML config file), then serve."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import ipaddress
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from proxy import CORE_BUILD, control, log_summary, logs
from proxy.active_rules import ActiveRules
from proxy.admin import ADMIN_TOKEN_ENV, AdminConfigError, check_binding
from proxy.dns import TrunkResolver, TrunkSpec, parse_trunk_spec
from proxy.gc_monitor import GcPacer, apply_gc_policy
from proxy.server import ProxyServer, ServerSettings
from proxy.settings import (
    LOG_FORMATS,
    LOG_LEVELS,
    Setting,
    add_flags,
    boolean,
    choice,
    file_path,
    host_name,
    integer,
    listed,
    network,
    read_config,
    seconds,
    split_hostport,
    table,
    text,
    validate,
)
from proxy.settings import (
    SettingsError as SettingsError,
)
from proxy.sip.addresses import Target
from proxy.sip.policy import ProxyConfig
from proxy.sip.untrusted import UNTRUSTED_MODES
from proxy.tcp_accept import TcpLimits
from proxy.tls import TlsContexts, TlsSettings, TlsSettingsError

log = logging.getLogger("callerid_proxy")
SECRET_ENV = "CALLERID_PROXY_SECRET"


def _resolved_hostport(value: object) -> tuple[str, int]:
    name, port = split_hostport(value)
    return _resolve(name), port


def _target(value: object) -> Target:
    return parse_target(text(value))


def _listen_address(value: object) -> tuple[bool, str, int]:
    """`[tls:]HOST:PORT`: (is TLS, host, port); a plain address serves UDP and TCP."""
    item = text(value)
    is_tls = item.lower().startswith("tls:")
    host, port = _resolved_hostport(item[4:] if is_tls else item)
    return is_tls, host, port


def _trunk_spec(value: object) -> TrunkSpec:
    return parse_trunk_spec(text(value))


DEFAULT_FAILOVER = (408, 500, 502, 503, 504)


def _no_answer_timeout(value: object) -> float | None:
    """Seconds; 0 turns the no-answer failover off (only Timer B then ends a silent attempt)."""
    timeout = seconds(0, 600)(value)
    return timeout if timeout > 0 else None


def _busy_share(value: object) -> float:
    try:
        share = float(text(value)) if not isinstance(value, int | float) else float(value)
    except ValueError:
        share = -1.0
    if isinstance(value, bool) or not 0.1 <= share <= 1.0:
        raise ValueError(f"expected a share from 0.1 to 1.0, got {value!r}")
    return share


def _probe_interval(value: object) -> float:
    return float(seconds(0.1, 3600)(value))


def _failover_statuses(value: object) -> frozenset[int]:
    """`408,503` or a list: 408 and 5xx only. A 4xx or 6xx is the callee's answer, never a
    trunk failure (RFC 3261 16.7 step 6 picks the best final; issue 8)."""
    items = value if isinstance(value, list | tuple) else text(value).split(",")
    codes = [str(item).strip() for item in items]
    if not codes or not all(c.isdigit() and (c == "408" or 500 <= int(c) <= 599) for c in codes):
        raise ValueError(f"expected 408 and 5xx codes separated by commas, got {value!r}")
    return frozenset(int(c) for c in codes)


# One row per setting: the flag --name-with-dashes and the --config key name_with_underscores.
# Adding a setting = one row here + reading values["name"] where it is used, in build_from:
#   Setting("tcp_max_connections", integer(1, 1_000_000), 1024, "accepted TCP ... (default 1024)",
#           "N"),
#   Setting("untrusted", choice("reply", "drop"), "reply", "...", "{reply,drop}"),
#   Setting("tls_cert", file_path, None, "...", "FILE", path=True),   # relative to the config
#   Setting("tls_verify", boolean, True, "...", const=False, flag_name="--tls-no-verify"),
#   Setting("worker_spec", text, None, "", hidden=True),
# The parser gets the raw flag text or the YAML value and raises ValueError("expected ..., got
# ..."); the caller prefixes `--flag:` or `file:line: key:`. Never parse a value outside the table.
_TCP = TcpLimits()
SETTINGS = table([
    Setting("rules", file_path, None, "caller-ID rules file", "FILE", path=True, required=True),
    Setting("listen", listed(_listen_address), ((False, "127.0.0.1", 5060),),
            "UDP and TCP address to listen on, or TLS only with tls: (repeatable; default "
            "127.0.0.1:5060)", "[tls:]HOST:PORT", repeatable=True),
    Setting("pbx", _target, None, "where inbound calls go", "[udp:|tcp:|tls:]HOST:PORT",
            required=True),
    Setting("trunk", listed(_trunk_spec), None,
            "where outbound calls go (first one); repeatable; a host name without a port is "
            "looked up with DNS SRV, and re-resolved on TTL", "[udp:|tcp:|tls:]HOST[:PORT]",
            repeatable=True, required=True),
    Setting("trusted", listed(network), (),
            "extra sources allowed to place outbound calls (repeatable)", "CIDR",
            repeatable=True),
    Setting("advertise", host_name, None, "address or host name put in Via/Record-Route", "HOST"),
    Setting("advertise_pbx", host_name, None,
            "address the PBX side is shown (e.g. a LAN address), if different", "HOST"),
    Setting("advertise_trunk", host_name, None,
            "address the trunk side is shown (e.g. a public or NAT address or name)", "HOST"),
    Setting("pid_file", file_path, Path("callerid-proxy.pid"),
            "pid file (default: callerid-proxy.pid); its .status file sits beside it", "FILE",
            path=True),
    Setting("secret", text, None, f"HMAC secret (else ${SECRET_ENV}, else random)"),
    Setting("log_level", choice(*LOG_LEVELS), "info", "default info", "{" + ",".join(LOG_LEVELS)
            + "}"),
    Setting("log_format", choice(*LOG_FORMATS), "text",
            "text, or json: one object per line (default text)", "{text,json}"),
    Setting("audit_log_budget", integer(0, 1_000_000), log_summary.DEFAULT_AUDIT_BUDGET,
            "caller-ID audit lines written per 10 s; the rest are counted in one summary line "
            f"(default {log_summary.DEFAULT_AUDIT_BUDGET}; 0: every line)", "N"),
    Setting("admin", _resolved_hostport, None,
            "admin HTTP endpoint (/metrics, /status, POST /reload); loopback", "HOST:PORT"),
    Setting("max_message", integer(1024, 16 * 1024 * 1024), 64 * 1024,
            "TCP message size cap in bytes (default 65536)", "BYTES"),
    Setting("tcp_idle_timeout", seconds(1, 86400), 120.0, "seconds (default 120)", "SECONDS"),
    # Issue 7: limits against outsiders (trusted peers are exempt), and the admin token.
    Setting("tcp_max_connections", integer(1, 1_000_000), _TCP.max_connections,
            f"accepted TCP connections from untrusted sources in total (default "
            f"{_TCP.max_connections})", "N"),
    Setting("tcp_max_per_source", integer(1, 1_000_000), _TCP.max_per_source,
            f"accepted TCP connections per untrusted IP address (default {_TCP.max_per_source})",
            "N"),
    Setting("tcp_message_deadline", seconds(0.1, 3600), _TCP.message_deadline,
            "seconds from a message's first byte to its last on TCP (default "
            f"{_TCP.message_deadline:g})", "SECONDS"),
    Setting("tcp_max_write_buffer", integer(1024, 1 << 30), _TCP.max_write_buffer,
            "bytes queued toward a TCP peer that does not read before it is cut off (default "
            f"{_TCP.max_write_buffer})", "BYTES"),
    # Issue 8: TLS, DNS trunks, scale-out peers.
    Setting("tls_cert", file_path, None, "certificate chain (PEM) the proxy presents", "FILE",
            path=True),
    Setting("tls_key", file_path, None, "private key (PEM) of --tls-cert", "FILE", path=True),
    Setting("tls_ca", file_path, None,
            "CA certificates (PEM) trusted for TLS peers (default: system store)", "FILE",
            path=True),
    Setting("tls_verify", boolean, True,
            "do not verify TLS peers' certificates (tests only; default verify)",
            const=False, flag_name="--tls-no-verify"),
    Setting("dns_server", _resolved_hostport, None,
            "DNS server for trunk names (default: the system's resolv.conf)", "HOST:PORT"),
    Setting("peer", listed(_resolved_hostport), (),
            "another instance with the same --secret behind one dispatcher: its Record-Route is "
            "taken as ours (repeatable)", "HOST:PORT", repeatable=True),
    # Issue 7: requests from sources that are neither the PBX nor a trunk.
    Setting("untrusted", choice(*UNTRUSTED_MODES), "reply",
            "requests from other sources: a short 403 (reply, default) or none (drop)",
            "{" + ",".join(UNTRUSTED_MODES) + "}"),
    # Issue 6/7: bounded state and overload shedding; issue 8: trunk availability.
    Setting("max_transactions", integer(1, 10_000_000), 3_000,
            "server transactions still waiting for a final answer above which new INVITEs get "
            "503 (default 3000)", "N"),
    Setting("max_dialogs", integer(1, 10_000_000), 100_000,
            "dialogs remembered for peers that drop Record-Route (default 100000)", "N"),
    Setting("max_loop_lag", seconds(0.001, 60), 0.1,
            "queueing delay in seconds (loop lag, UDP queue, TCP backlog) above which, sustained "
            "and growing, new INVITEs get 503 (default 0.1)", "SECONDS"),
    Setting("max_busy", _busy_share, 0.95,
            "CPU share of the event loop, smoothed over 1 s, above which new INVITEs get 503 "
            "(default 0.95)", "SHARE"),
    Setting("no_answer_timeout", _no_answer_timeout, 2.0,
            "seconds without even a provisional before the next trunk is tried (default 2; 0: "
            "only Timer B)", "SECONDS"),
    Setting("failover_statuses", _failover_statuses, frozenset(DEFAULT_FAILOVER),
            "trunk final responses that fail over: 408 and 5xx codes (default "
            "408,500,502,503,504)", "CODES"),
    Setting("probe_interval", _probe_interval, None,
            "seconds between OPTIONS keepalives to each trunk (default: none)", "SECONDS"),
    Setting("probe_failures", integer(1, 100), 3,
            "unanswered keepalives in a row before a trunk is down (default 3)", "N"),
    Setting("probe_successes", integer(1, 100), 2,
            "answered keepalives in a row before it is up again (default 2)", "N"),
    Setting("round_robin", boolean, False,
            "start each new outbound call at the next trunk (default: in order)", const=True),
    Setting("large_over_tcp", listed(choice("pbx", "trunk")), (),
            "that side's UDP peer also takes TCP: requests over 1300 bytes go there over TCP "
            "(RFC 3261 18.1.1); repeatable", "{pbx,trunk}", repeatable=True),
    # Issue 6: worker processes behind one shared address (proxy/workers.py).
    Setting("workers", integer(1, 64), 1,
            "worker processes behind one shared address (default 1: none)", "N"),
    Setting("worker_spec", text, None, "", hidden=True),  # set by a --workers supervisor
    Setting("admin_token", text, None,
            f"bearer token for POST /reload (else ${ADMIN_TOKEN_ENV}); required when --admin is "
            "not loopback"),
])


class MergedSettings(dict[str, Any]):
    """Raw settings (the file's, then the flags over them), with where each came from."""

    def __init__(self) -> None:
        super().__init__()
        self.origins: dict[str, str] = {}


def add_run_command(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "run", help="run the proxy between the PBX and the trunk"
    )
    parser.add_argument("--config", type=Path, help="YAML file with the same settings; flags win")
    add_flags(parser, SETTINGS)
    parser.set_defaults(handler=run_command)


def _admin_token(value: str | None, admin: tuple[str, int] | None) -> str | None:
    token = value or os.environ.get(ADMIN_TOKEN_ENV, "") or None
    if admin is not None:
        try:
            check_binding(admin[0], token)
        except AdminConfigError as error:
            raise SettingsError(str(error)) from error
    return token


def run_command(args: argparse.Namespace) -> int:
    try:
        settings = merged_settings(args)
        values = validate_settings(settings)
        logs.configure(values["log_level"], values["log_format"],
                       audit_budget=values["audit_log_budget"])
        # A crash in native code (the compiled core, uvloop) leaves every thread's Python stack
        # on stderr, beside the log, instead of a bare exit code.
        with contextlib.suppress(ValueError, OSError):  # stderr without a file descriptor
            faulthandler.enable()
        config, server_settings, rules_path = build_from(values)
        workers: int = values["workers"]
        if workers > 1 and any(is_tls for is_tls, _, _ in values["listen"]):
            # The workers would not listen on it, and worker 0's own port (listen port + 1) is
            # where TLS usually is (5061): refused rather than served without TLS.
            raise SettingsError("--workers: listening on tls: is not supported with workers "
                                "(run one process for TLS, or terminate TLS in front)")
        if not values["worker_spec"]:  # a worker's pid file is its supervisor's business
            control.refuse_live_pid_file(server_settings.pid_file)
    except SettingsError as error:
        print(f"callerid-proxy run: {error}", file=sys.stderr)
        return 2
    except control.PidFileTaken as error:
        print(f"callerid-proxy run: {error}", file=sys.stderr)
        return 1
    try:
        active = ActiveRules.load(rules_path)
    except Exception as error:  # RulesError lists every problem with file:line
        print(f"callerid-proxy run: rules refused:\n{error}", file=sys.stderr)
        return 1
    if workers > 1 or args.worker_spec:
        return _run_multi(args, settings, active, server_settings, workers)
    _install_uvloop()
    try:
        asyncio.run(_serve(config, active, server_settings))
    except OSError as error:  # typically: the listen address is taken or not ours
        print(f"callerid-proxy run: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0


def _run_multi(args: argparse.Namespace, settings: dict[str, Any], active: ActiveRules,
               server_settings: ServerSettings, workers: int) -> int:
    """`--workers N`: the supervisor (proxy/workers.py), or one of its workers."""
    from proxy import worker_process
    from proxy import workers as supervision

    if args.worker_spec:
        _install_uvloop()
        spec = worker_process.WorkerSpec.from_json(args.worker_spec)
        try:
            worker_process.run_worker(spec, settings, build_settings, active)
        except OSError as error:
            print(f"callerid-proxy run: worker {spec.index} cannot listen: {error}",
                  file=sys.stderr)
            return 1
        return 0
    return supervision.run_supervisor(
        settings, server_settings.listen, server_settings.pid_file, server_settings.admin,
        active.path, active.current.version, workers,
    )


async def _serve(config: ProxyConfig, active: ActiveRules, settings: ServerSettings) -> None:
    server = ProxyServer(config, active, settings)
    summary = log_summary.install()  # refusals and drops: one example, then a summary line
    server.ticker.add(summary.flush)
    await server.start()
    log.info("SIP core: %s", CORE_BUILD.describe())
    control.sd_notify("READY=1")  # under systemd Type=notify: listening, rules loaded
    # Start-up objects (rules, phonenumbers metadata, the core's tables) never die: keep them out
    # of every GC pass, and collect young objects every 50 ms so that no pause gets long.
    apply_gc_policy()
    with server.gc_monitor.installed(), GcPacer().running(asyncio.get_running_loop()):
        # times every collection (proxy/gc_monitor.py)
        await server.serve_until_stopped()


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        log.info("uvloop not installed: using the standard asyncio loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def merged_settings(args: argparse.Namespace) -> MergedSettings:
    settings = MergedSettings()
    if args.config is not None:
        from_file = read_config(args.config, SETTINGS)
        settings.update(from_file.values)
        settings.origins.update(from_file.origins)
    for name, row in SETTINGS.items():
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
            settings.origins[name] = row.option
        elif row.repeatable and name in settings and not isinstance(settings[name], list | dict):
            settings[name] = [settings[name]]  # a scalar in the file is a one-item list
    return settings


def validate_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return validate(SETTINGS, settings, getattr(settings, "origins", {}))


def build_settings(settings: dict[str, Any]) -> tuple[ProxyConfig, ServerSettings, Path]:
    return build_from(validate_settings(settings))


def build_from(values: dict[str, Any]) -> tuple[ProxyConfig, ServerSettings, Path]:
    addresses: list[tuple[bool, str, int]] = list(values["listen"])
    listen = [(host, port) for is_tls, host, port in addresses if not is_tls]
    tls_listen = [(host, port) for is_tls, host, port in addresses if is_tls]
    if not listen:
        raise SettingsError("--listen: at least one plain (UDP and TCP) address is needed")
    trunks, resolver = _trunk_targets(values["trunk"], values["dns_server"])
    pbx: Target = values["pbx"]
    sides = (values["advertise_pbx"], values["advertise_trunk"])
    advertised = _advertised(listen, values["advertise"], sides)
    # Dialling TLS without a TLS listener: our Via still says TLS (RFC 3261 18.2.1), shown on
    # the plain listen addresses; answers come back on the connection we opened.
    dials_tls = any(t.transport == "tls" for t in (*trunks, pbx)) or bool(
        resolver and any(spec.transport == "tls" for spec in resolver.specs)
    )
    shown_tls = tls_listen or (listen if dials_tls else [])
    advertised += _tls_advertised(shown_tls, values["advertise"], sides)
    config = ProxyConfig(
        advertised=advertised,
        pbx=pbx,
        trunk=trunks[0],
        extra_trunks=tuple(trunks[1:]),
        secret=_secret(values["secret"]),
        trusted=tuple(values["trusted"]),
        pbx_facing=sides[0],
        trunk_facing=sides[1],
        peers=tuple(Target(t, h, p) for h, p in values["peer"] for t in ("udp", "tcp")),
        max_transactions=values["max_transactions"],
        max_dialogs=values["max_dialogs"],
        no_answer_timeout=values["no_answer_timeout"],
        failover_statuses=frozenset(values["failover_statuses"]),
        probe_interval=values["probe_interval"],
        probe_failures=values["probe_failures"],
        probe_successes=values["probe_successes"],
        round_robin=values["round_robin"],
        large_over_tcp=frozenset(values["large_over_tcp"]),
        untrusted=values["untrusted"],
    )
    server_settings = ServerSettings(
        listen=tuple(listen),
        pid_file=values["pid_file"],
        max_message=values["max_message"],
        tcp_idle_timeout=values["tcp_idle_timeout"],
        admin=values["admin"],
        admin_token=_admin_token(values["admin_token"], values["admin"]),
        tcp=TcpLimits(
            max_connections=values["tcp_max_connections"],
            max_per_source=values["tcp_max_per_source"],
            message_deadline=values["tcp_message_deadline"],
            max_write_buffer=values["tcp_max_write_buffer"],
        ),
        tls_listen=tuple(tls_listen),
        tls=_tls_contexts(values, listening=bool(tls_listen)),
        trunk_resolver=resolver,
        max_loop_lag=values["max_loop_lag"],
        max_busy=values["max_busy"],
    )
    return config, server_settings, values["rules"]


def _advertised(
    listen: list[tuple[str, int]], advertise: object, sides: tuple[str | None, ...]
) -> tuple[Target, ...]:
    """Every address of ours a peer may see (Via, Record-Route, Route), per transport."""
    targets: list[Target] = []
    for host, port in listen:
        shown = str(advertise) if advertise else host
        if _is_unspecified(shown):
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


def _tls_advertised(
    tls_listen: list[tuple[str, int]], advertise: object, sides: tuple[str | None, ...]
) -> tuple[Target, ...]:
    """Our TLS addresses as peers see them (Via `SIP/2.0/TLS`, Record-Route `transport=tls`)."""
    targets: list[Target] = []
    for host, port in tls_listen:
        shown = [str(advertise) if advertise else host]
        if _is_unspecified(shown[0]):
            shown = [side for side in sides if side is not None]
        targets += [Target("tls", item, port) for item in shown]
    return tuple(dict.fromkeys(targets))


def _tls_contexts(values: dict[str, Any], *, listening: bool) -> TlsContexts:
    tls = TlsSettings(
        cert=values["tls_cert"], key=values["tls_key"], ca=values["tls_ca"],
        verify=values["tls_verify"],
    )  # fmt: skip
    try:
        return TlsContexts(tls, listening=listening)
    except TlsSettingsError as error:
        raise SettingsError(str(error)) from error


def _trunk_targets(
    specs: list[TrunkSpec], dns_server: tuple[str, int] | None
) -> tuple[list[Target], TrunkResolver | None]:
    """IP literals as they are; host names resolved now (RFC 3263: SRV, then A/AAAA) by a
    resolver that the server keeps refreshing on TTL."""
    if all(spec.is_literal for spec in specs):
        return [spec.literal_target() for spec in specs], None
    try:
        resolver = TrunkResolver(specs, dns_server)
    except ValueError as error:
        raise SettingsError(str(error)) from error
    asyncio.run(resolver.refresh())  # start-up, before any packet: later refreshes run on the loop
    if not resolver.targets:
        raise SettingsError("no --trunk could be resolved (see the DNS errors above)")
    return list(resolver.targets), resolver


def _is_unspecified(shown: str) -> bool:
    try:
        return ipaddress.ip_address(shown).is_unspecified
    except ValueError:
        return False  # a host name


def _secret(value: object) -> bytes:
    text = str(value) if value else os.environ.get(SECRET_ENV, "")
    if text:
        return text.encode()
    log.warning(
        "no --secret and no %s: using a random secret; after a restart, in-dialog requests of "
        "calls set up before it cannot be restored and are refused", SECRET_ENV,
    )
    return secrets.token_bytes(32)


def parse_hostport(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT; a host name is resolved once, here, to an IP literal."""
    try:
        return _resolved_hostport(text)
    except SettingsError:
        raise
    except ValueError as error:
        raise SettingsError(str(error)) from None


def parse_target(text: str) -> Target:
    transport = "udp"
    lowered = text.lower()
    for prefix in ("udp:", "tcp:", "tls:"):
        if lowered.startswith(prefix):
            transport, text = prefix[:3], text[4:]
    host, port = parse_hostport(text)
    name = text.rpartition(":")[0].strip("[]") if transport == "tls" else None
    return Target(transport, host, port, name=name or None)


def _resolve(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    except OSError as error:
        raise SettingsError(f"cannot resolve {name!r}: {error}") from error
    return str(infos[0][4][0])

