"""The `callerid-proxy` command line: one sub-command per user task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from proxy import rules_cli, run_cli
from proxy.logs import software_version
from proxy.settings import suggestion


class Parser(argparse.ArgumentParser):
    """argparse, with "did you mean" for a mistyped option (sub-commands inherit the class)."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            known = [o for action in self._all_actions() for o in action.option_strings]
            hints = [
                word + suggestion(word.split("=", 1)[0], known)
                for word in message[len(prefix):].split()
            ]
            message = prefix + " ".join(hints)
        super().error(message)

    def _all_actions(self) -> list[argparse.Action]:
        actions = list(self._actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    actions += sub._actions
        return actions


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="callerid-proxy",
        description="In-path SIP proxy that picks the caller ID shown on outbound calls.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {software_version()}")
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
