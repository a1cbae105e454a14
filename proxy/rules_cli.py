"""`callerid-proxy check|explain|apply`: the administrator's Save / preview / Apply workflow."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import rules
from proxy import control
from proxy.admin import ADMIN_TOKEN_ENV


def add_rules_commands(commands: Any) -> None:
    check = commands.add_parser("check", help="validate a rules file")
    check.add_argument("rules_file", metavar="RULES.yaml", type=Path)
    check.set_defaults(handler=run_check)

    explain = commands.add_parser(
        "explain",
        help="show the number a call would show, and why",
        description="With --user and --to: one call. Without: every user against one example "
        "destination per rule, plus (other).",
    )
    explain.add_argument("rules_file", metavar="RULES.yaml", type=Path)
    explain.add_argument("--user", help="SIP user / extension the PBX puts in From, e.g. 1001")
    explain.add_argument("--to", help="destination as dialled, e.g. 00441234567890")
    explain.add_argument(
        "--privacy",
        action="store_true",
        help="the INVITE carries Privacy: id (the user asked to withhold the number, e.g. *31#)",
    )
    explain.add_argument("--json", action="store_true", help="print JSON instead of text")
    explain.set_defaults(handler=run_explain)

    apply = commands.add_parser("apply", help="validate, then make the running proxy load it")
    apply.add_argument("rules_file", metavar="RULES.yaml", type=Path)
    apply.add_argument(
        "--pid-file",
        type=Path,
        default=control.DEFAULT_PID_FILE,
        help=f"pid file of the running proxy (default: {control.DEFAULT_PID_FILE})",
    )
    apply.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help="reload through the proxy's admin endpoint instead of SIGHUP to --pid-file",
    )
    apply.add_argument(
        "--admin-token",
        help="bearer token for --admin (default: $CALLERID_PROXY_ADMIN_TOKEN, as the proxy reads)",
    )
    apply.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the proxy (default: 5)"
    )
    apply.set_defaults(handler=run_apply)


def _load(path: Path) -> rules.Rules | None:
    """The rules, with warnings printed; None after printing every error."""
    try:
        loaded = rules.load(path)
    except rules.RulesError as exc:
        _print_lines(exc.warnings, sys.stderr, "warning: ")
        _print_lines(exc.errors, sys.stderr, "error: ")
        print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
        return None
    _print_lines(loaded.warnings, sys.stderr, "warning: ")
    return loaded


def _print_lines(lines: tuple[str, ...], stream: TextIO, label: str) -> None:
    # "file:line: warning: message" keeps the file:line first, as editors expect to jump to it.
    for line in lines:
        location, sep, message = line.partition(": ")
        print(f"{location}{sep}{label}{message}" if sep else f"{label}{line}", file=stream)


def _summary(loaded: rules.Rules) -> str:
    switch = "on" if loaded.apply_to_users_with_own_number else "off"
    summary = (
        f"version {loaded.version}: country {loaded.country}, {len(loaded.numbers)} numbers, "
        f"{len(loaded.users)} users ({loaded.users_with_own_number} with own number), "
        f"{len(loaded.rules)} rules (apply_to_users_with_own_number {switch})"
    )
    places = ", ".join(loaded.user_source)
    extras = [
        *(["local presence on"] if loaded.local_presence else []),
        *([f"{len(loaded.withheld_users)} withheld users"] if loaded.withheld_users else []),
        *([f"user from {places}"] if loaded.user_source != ("from",) else []),
        *([f"{len(loaded.trunk_formats)} trunk settings"] if loaded.trunk_formats else []),
    ]
    return summary + "".join(f", {extra}" for extra in extras)


def run_check(args: argparse.Namespace) -> int:
    loaded = _load(args.rules_file)
    if loaded is None:
        return 1
    print(f"{args.rules_file}: OK, {_summary(loaded)}")
    return 0


def _decision_json(decision: rules.Decision) -> dict[str, str | int | None]:
    """`number` is, for a withheld call, the number P-Asserted-Identity carries."""
    return {
        "number": decision.number,
        "name": decision.name,
        "reason": decision.reason,
        "step": decision.step,
        "rule": decision.rule,
        "privacy": decision.privacy,
    }


def run_explain(args: argparse.Namespace) -> int:
    if (args.user is None) != (args.to is None):
        print("explain: give both --user and --to, or neither for the table", file=sys.stderr)
        return 2
    loaded = _load(args.rules_file)
    if loaded is None:
        return 1
    if args.user is not None:
        decision = rules.resolve(loaded, args.user, args.to, privacy_requested=args.privacy)
        if args.json:
            print(json.dumps(_decision_json(decision)))
        else:
            print(_explain_text(args.user, args.to, decision))
        return 0
    table = rules.who_shows_what(loaded)
    if args.json:
        print(json.dumps(_table_json(table), indent=2))
    else:
        print(_render_table(table))
    return 0


def _explain_text(user: str, to: str, decision: rules.Decision) -> str:
    name = f' "{decision.name}"' if decision.name else ""
    if decision.privacy is not None:
        shows = (
            f"is withheld (From Anonymous, Privacy: {decision.privacy}); "
            f"P-Asserted-Identity carries {decision.number}{name}"
        )
    else:
        shows = f"shows {decision.number}{name}"
    return f"user {user} calling {to} {shows}\nbecause {decision.reason}"


def _table_json(table: rules.Table) -> dict[str, Any]:
    return {
        "columns": [{"label": c.label, "destination": c.destination} for c in table.columns],
        "rows": [
            {"user": row.user, "decisions": [_decision_json(d) for d in row.decisions]}
            for row in table.rows
        ],
    }


_TAGS = {"step 1": "own", "step 3": "own", "step 4": "default", "local presence": "local"}


def _cell(decision: rules.Decision) -> str:
    # A short tag of the step is enough in a grid.
    tag = f"rule #{decision.rule}" if decision.rule is not None else _TAGS.get(decision.step)
    withheld = "withheld, PAI " if decision.privacy is not None else ""
    return f"{withheld}{decision.number} ({tag or decision.step})"


def _render_table(table: rules.Table) -> str:
    header = ["user", *(column.label for column in table.columns)]
    grid = [header, *([row.user, *map(_cell, row.decisions)] for row in table.rows)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(header))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        for line in grid
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    examples = ", ".join(
        f"{column.label} as {column.destination}" for column in table.columns if column.destination
    )
    if examples:
        lines.append(
            f"\nexample destinations: {examples}; (other): any destination no rule matches"
        )
    return "\n".join(line.rstrip() for line in lines)


def run_apply(args: argparse.Namespace) -> int:
    loaded = _load(args.rules_file)
    if loaded is None:
        print("apply: nothing was sent to the proxy", file=sys.stderr)
        return 1
    if args.admin:
        host, _, port = args.admin.rpartition(":")
        if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            print(f"apply: --admin expects HOST:PORT, got {args.admin!r}", file=sys.stderr)
            return 2
        address = (host.strip("[]"), int(port))
        token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
        result = control.request_reload_via_admin(
            address, loaded.version, args.timeout, token=token
        )
    else:
        result = control.request_reload(args.pid_file, loaded.version, args.timeout)
    if result.outcome is control.Outcome.APPLIED:
        print(
            f"applied version {loaded.version} ({len(loaded.users)} users, "
            f"{len(loaded.rules)} rules)"
        )
        return 0
    print(f"apply: {result.message}", file=sys.stderr)
    if result.outcome is control.Outcome.REFUSED:
        errors = result.status.last_reload_errors if result.status else result.errors
        _print_lines(errors, sys.stderr, "error: ")
    return 1
