"""`resolve`: which of the company's numbers one call shows, and why. Pure and per-call fast."""

from __future__ import annotations

from collections.abc import Callable

from rules.dialling import strip_separators, uri_number_part
from rules.model import PRIVACY_ID, Decision, Rule, Rules
from rules.presence import most_local
from rules.shadowing import first_match

EMERGENCY, LOCAL_PRESENCE = "emergency", "local presence"
STEP_1, STEP_2, STEP_3, STEP_4 = "step 1", "step 2", "step 3", "step 4"


def destination_digits(rules: Rules, destination: str) -> str | None:
    """The destination as international digits; with `outside_line_prefix` set, a destination
    starting with it is first read without it (the PBX dialled the outside line)."""
    prefix = rules.emergency.outside_line_prefix
    if prefix is not None:
        text = uri_number_part(destination.strip())
        compact = strip_separators(text) if text is not None else ""
        if compact.startswith(prefix):
            digits = rules.dialling.normalise(compact[len(prefix) :])
            if digits is not None:
                return digits
    return rules.dialling.normalise(destination)


def matching_rule(rules: Rules, destination: str) -> Rule | None:
    """The first advanced rule whose prefix matches `destination` however it was dialled."""
    if not rules.rules:
        return None
    digits = destination_digits(rules, destination)
    if digits is None:
        return None
    return first_match(rules.prefix_index, digits, rules.longest_prefix)


def find_user(rules: Rules, user_at: Callable[[str], str | None]) -> tuple[str, str]:
    """(user, place): the first place of `user_source` where `user_at` finds a user; the From
    user part (place "from") when none does."""
    for place in rules.user_source:
        user = user_at(place)
        if user:
            return user, place
    return user_at("from") or "", "from"


def own_number(rules: Rules, user: str) -> tuple[str | None, str]:
    """The user's own number and how it was found. A user part that is not listed under
    `users` but is one of `numbers` (E.164 with or without '+', or dialled nationally) means
    the PBX chose that caller ID itself: it counts as that user's own number."""
    if user in rules.users:
        own = rules.users[user]
        return own, f"has own number {own}"
    number = rules.own_number_digits.get(user.removeprefix("+"))
    if number is None and user:
        number = rules.own_number_digits.get(rules.dialling.normalise(user) or "")
    return number, f"is the company's number {number} (chosen by the PBX)"


def resolve(
    rules: Rules,
    user: str,
    destination: str,
    *,
    privacy_requested: bool = False,
    found_in: str | None = None,
    pbx_name: str | None = None,
) -> Decision:
    """The resolution order, first applicable step wins:

    0. emergency: the destination is an emergency number: the user's own number, else
       emergency_number, else default_outgoing_number; never withheld;
    1. the user has their own number and apply_to_users_with_own_number is false;
    2. the first advanced rule whose destination_prefix matches;
    -  local presence (when on): the owned number sharing the most leading digits;
    3. the user's own number;
    4. default_outgoing_number.

    A withheld user, a rule with `number: anonymous` or `privacy_requested` (the INVITE's
    Privacy: id) withholds the call; the decision's number is then the one P-Asserted-Identity
    carries. A user not listed (or listed as `default`) has no own number. Never raises.
    """
    own, how = own_number(rules, user)
    decision = _emergency(rules, user, destination, own, how)
    if decision is None:
        decision = _ordinary(rules, user, destination, own, how)
        decision = _withheld(rules, decision, user, privacy_requested)
    return _finish(rules, decision, user, found_in, pbx_name)


def _emergency(
    rules: Rules, user: str, destination: str, own: str | None, how: str
) -> Decision | None:
    code = rules.emergency.match(destination)
    if code is None:
        return None
    head = f"{EMERGENCY}: destination {destination!r} dials the emergency number {code}"
    if own is not None:
        number, why = own, f"user {user!r} {how}"
    elif rules.emergency_number is not None:
        number, why = rules.emergency_number, f"emergency_number {rules.emergency_number}"
    else:
        number = rules.default_outgoing_number
        why = f"default_outgoing_number {number}"
    return Decision(number, None, f"{head}, never withheld; {why}", EMERGENCY)


def _ordinary(rules: Rules, user: str, destination: str, own: str | None, how: str) -> Decision:
    if own is not None and not rules.apply_to_users_with_own_number:
        return Decision(
            own,
            None,
            f"{STEP_1}: user {user!r} {how} (apply_to_users_with_own_number is false)",
            STEP_1,
        )
    rule = matching_rule(rules, destination)
    if rule is None:
        return _after_rules(rules, user, destination, own, how)
    reason = (
        f"{STEP_2}: advanced rule #{rule.index} (destination_prefix {rule.prefix!r}, "
        f"line {rule.line}) matches destination {destination!r}"
    )
    if not rule.withheld:
        return Decision(rule.number, None, reason, STEP_2, rule.index)
    carried = _after_rules(rules, user, destination, own, how)
    return Decision(
        carried.number,
        None,
        f"{reason} and withholds the caller ID; P-Asserted-Identity carries {carried.number} "
        f"({carried.reason})",
        STEP_2,
        rule.index,
        PRIVACY_ID,
    )


def _after_rules(
    rules: Rules, user: str, destination: str, own: str | None, how: str
) -> Decision:
    """Local presence, step 3 and step 4: what a call no advanced rule decides shows."""
    no_rule = f"no advanced rule matches destination {destination!r}"
    if rules.local_presence:
        digits = destination_digits(rules, destination)
        found = most_local(rules.presence_index, digits) if digits is not None else None
        if found is not None:
            number, shared = found
            return Decision(
                number,
                None,
                f"{LOCAL_PRESENCE}: {number} shares +{shared} with the destination "
                f"{destination!r} ({no_rule})",
                LOCAL_PRESENCE,
            )
    if own is not None:
        return Decision(own, None, f"{STEP_3}: {no_rule}; user {user!r} {how}", STEP_3)
    who = "is listed as default" if user in rules.users else "is not listed"
    if user in rules.withheld_users:
        who = "has no own number"
    number = rules.default_outgoing_number
    return Decision(
        number,
        None,
        f"{STEP_4}: {no_rule}; user {user!r} {who}, so default_outgoing_number {number}",
        STEP_4,
    )


def _withheld(rules: Rules, decision: Decision, user: str, privacy_requested: bool) -> Decision:
    if decision.privacy is not None:
        return decision
    if user in rules.withheld_users:
        why = f"user {user!r} is withheld (anonymous)"
    elif privacy_requested:
        why = "the INVITE asks for Privacy: id"
    else:
        return decision
    return Decision(
        decision.number,
        None,
        f"{decision.reason}; withheld: {why}, P-Asserted-Identity carries {decision.number}",
        decision.step,
        decision.rule,
        PRIVACY_ID,
    )


def _finish(
    rules: Rules, decision: Decision, user: str, found_in: str | None, pbx_name: str | None
) -> Decision:
    reason = decision.reason
    if found_in is not None:
        reason += f"; user {user!r} read from {found_in}"
    if rules.keep_pbx_display_name and pbx_name:
        name: str | None = pbx_name
    else:
        name = rules.user_names.get(user) or rules.names.get(decision.number)
    return Decision(
        decision.number, name, reason, decision.step, decision.rule, decision.privacy, user
    )
