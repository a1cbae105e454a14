"""Caller-ID rules: the YAML model, its validation, and the per-call resolution.

Pure: no network, no SIP, no logging configuration. The proxy and the CLI use only this API.
"""

from __future__ import annotations

from rules.errors import RulesError
from rules.formats import HOST_PBX, HOST_TRUNK, NUMBER_FORMATS, TrunkFormat
from rules.loader import load, loads
from rules.model import ANONYMOUS, PRIVACY_ID, Decision, NumberEntry, Rule, Rules
from rules.resolution import find_user, matching_rule, resolve
from rules.table import Table, who_shows_what

__all__ = [
    "ANONYMOUS",
    "HOST_PBX",
    "HOST_TRUNK",
    "NUMBER_FORMATS",
    "PRIVACY_ID",
    "Decision",
    "NumberEntry",
    "Rule",
    "Rules",
    "RulesError",
    "Table",
    "TrunkFormat",
    "find_user",
    "load",
    "loads",
    "matching_rule",
    "resolve",
    "who_shows_what",
]
