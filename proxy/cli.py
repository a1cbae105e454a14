"""The `callerid-proxy` command line: one sub-command per user task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy import rules_cli, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callerid-proxy",
        description="In-path SIP proxy that picks the caller ID shown on outbound calls.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_cli.add_run_command(commands)
    rules_cli.add_rules_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    code: int = handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
