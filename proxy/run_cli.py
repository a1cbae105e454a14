"""`callerid-proxy run`: placeholder until the proxy issue lands."""

from __future__ import annotations

import argparse
from typing import Any


def add_run_command(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("run", help="run the proxy")
    parser.set_defaults(handler=lambda _args: 2)
