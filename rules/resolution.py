"""`resolve`: which of the company's numbers one call shows, and why. Pure and per-call fast."""

from __future__ import annotations

from rules.model import Decision, Rule, Rules
from rules.shadowing import first_match


def matching_rule(rules: Rules, destination: str) -> Rule | None:
    """The first advanced rule whose prefix matches `destination` however it was dialled."""
    if not rules.rules:
        return None
    digits = rules.dialling.normalise(destination)
    if digits is None:
        return None
    return first_match(rules.prefix_index, digits, rules.longest_prefix)


def resolve(rules: Rules, user: str, destination: str) -> Decision:
    """The resolution order, first applicable step wins:

    1. the user has their own number and apply_to_users_with_own_number is false;
    2. the first advanced rule whose destination_prefix matches;
    3. the user's own number;
    4. default_outgoing_number.

    A user not listed (or listed as `default`) has no own number. Never raises.
    """
    own = rules.users.get(user)
    if own is not None and not rules.apply_to_users_with_own_number:
        return Decision(
            own,
            rules.names.get(own),
            f"step 1: user {user!r} has own number {own} (apply_to_users_with_own_number is false)",
        )
    rule = matching_rule(rules, destination)
    if rule is not None:
        return Decision(
            rule.number,
            rules.names.get(rule.number),
            f"step 2: advanced rule #{rule.index} (destination_prefix {rule.prefix!r}, "
            f"line {rule.line}) matches destination {destination!r}",
        )
    if own is not None:
        return Decision(
            own,
            rules.names.get(own),
            f"step 3: no advanced rule matches destination {destination!r}; "
            f"user {user!r} has own number {own}",
        )
    who = "is listed as default" if user in rules.users else "is not listed"
    number = rules.default_outgoing_number
    return Decision(
        number,
        rules.names.get(number),
        f"step 4: no advanced rule matches destination {destination!r}; user {user!r} {who}, "
        f"so default_outgoing_number {number}",
    )
