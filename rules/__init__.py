"""Caller-ID rules: the YAML model, its validation, and the per-call resolution.

Pure: no network, no SIP, no logging configuration. The proxy and the CLI use only this API.
"""

from __future__ import annotations

from rules.errors import RulesError
from rules.loader import load, loads
from rules.model import Decision, NumberEntry, Rule, Rules
from rules.resolution import matching_rule, resolve
from rules.table import Table, who_shows_what

__all__ = [
    "Decision",
    "NumberEntry",
    "Rule",
    "Rules",
    "RulesError",
    "Table",
    "load",
    "loads",
    "matching_rule",
    "resolve",
    "who_shows_what",
]
