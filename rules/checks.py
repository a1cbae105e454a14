"""Warnings about the new settings that a valid file can still get wrong."""

from __future__ import annotations

from collections.abc import Mapping

from rules.collector import Collector
from rules.emergency import EmergencyPlan
from rules.model import NumberEntry


def emergency_warnings(
    c: Collector,
    *,
    country: str,
    country_code: str,
    plan: EmergencyPlan,
    numbers: tuple[NumberEntry, ...],
    users: Mapping[str, str | None],
    fallback: str,
) -> None:
    """Warn when an emergency call would show no number the emergency services of `country`
    can call back (one of another country), or when no emergency number is known at all.

    `fallback` is what users without an own number show: emergency_number or the default.
    """
    lines = {entry.number: entry.line for entry in numbers}
    if not plan.codes and plan.long_pattern is None:
        c.warn(
            1,
            f"no emergency numbers are known for {country}: list them under emergency_numbers "
            "so emergency calls are never withheld",
        )
    shown: dict[str, list[str]] = {}
    for user, own in users.items():
        shown.setdefault(own or fallback, []).append(user)
    shown.setdefault(fallback, []).append("(other users)")
    for number, who in shown.items():
        if number.startswith("+" + country_code):
            continue
        listed = ", ".join(who[:5]) + (f" and {len(who) - 5} more" if len(who) > 5 else "")
        c.warn(
            lines.get(number, 1),
            f"emergency calls of {listed} would show {number}, which is not a number of "
            f"{country} (+{country_code}) the emergency services can call back; set "
            "emergency_number to one of yours in that country",
        )
