"""Index advanced rules by prefix and find rules that can never match."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rules.model import Rule


def first_match(index: Mapping[str, Rule], digits: str, longest: int) -> Rule | None:
    """The earliest rule whose prefix starts `digits`: at most `longest` dict lookups."""
    best: Rule | None = None
    for end in range(1, min(len(digits), longest) + 1):
        rule = index.get(digits[:end])
        if rule is not None and (best is None or rule.index < best.index):
            best = rule
    return best


def index_rules(rules: Sequence[Rule]) -> tuple[dict[str, Rule], list[tuple[int, str]]]:
    """Map each distinct prefix to its first rule; warn about rules an earlier rule hides.

    Returns the index and (line, message) warnings. A later rule is hidden when an earlier
    rule's prefix is a prefix of (or equal to) its own, since the first match wins.
    """
    index: dict[str, Rule] = {}
    warnings: list[tuple[int, str]] = []
    longest = 0
    for rule in rules:
        earlier = first_match(index, rule.digits, longest)
        if earlier is not None:
            warnings.append((rule.line, _hidden_message(rule, earlier)))
        if rule.digits not in index:
            index[rule.digits] = rule
            longest = max(longest, len(rule.digits))
    return index, warnings


def _hidden_message(rule: Rule, earlier: Rule) -> str:
    if earlier.digits == rule.digits and earlier.number == rule.number:
        return (
            f"duplicate rule: rule #{rule.index} (destination_prefix {rule.prefix!r}) repeats "
            f"rule #{earlier.index} (line {earlier.line})"
        )
    return (
        f"rule #{rule.index} (destination_prefix {rule.prefix!r}) can never match: rule "
        f"#{earlier.index} (destination_prefix {earlier.prefix!r}, line {earlier.line}) "
        f"matches every such destination first"
    )
