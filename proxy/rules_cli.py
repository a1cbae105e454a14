"""`callerid-proxy check|explain|apply`: placeholder until the rules issue lands."""

from __future__ import annotations

from typing import Any


def add_rules_commands(commands: Any) -> None:
    del commands
