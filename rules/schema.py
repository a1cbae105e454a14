"""Walk the YAML node tree of a rules file, checking the schema and collecting every problem.

The schema is the contract shared with the proxy and the docs:

    country, numbers, default_outgoing_number, users,
    advanced_rules: {apply_to_users_with_own_number, local_presence,
                     rules: [{destination_prefix, number}]},
    and the settings of rules.settings (user_source, emergency..., trunks...).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

import phonenumbers

from rules.collector import Collector
from rules.dialling import DiallingPlan, strip_separators
from rules.model import NumberEntry, Rule
from rules.settings import Helpers
from rules.values import e164_problem, name_problem, user_problem
from rules.yaml_source import (
    BOOL_TAG,
    NULL_TAG,
    STR_TAG,
    MappingNode,
    Node,
    ScalarNode,
    SequenceNode,
    kind_of,
    line_of,
    yaml_value,
)

TOP_KEYS = (
    "country",
    "numbers",
    "default_outgoing_number",
    "users",
    "advanced_rules",
    "user_source",
    "keep_pbx_display_name",
    "emergency_numbers",
    "emergency_number",
    "outside_line_prefix",
    "trunks",
)
NUMBER_KEYS = ("number", "name")
USER_KEYS = ("number", "name", "withheld")
ADVANCED_KEYS = ("apply_to_users_with_own_number", "local_presence", "rules")
RULE_KEYS = ("destination_prefix", "number")
DEFAULT = "default"
ANONYMOUS = "anonymous"

Fields = dict[str, tuple[Node, Node]]


@dataclass
class Parsed:
    """The checked content of a file; only meaningful when the collector has no errors."""

    plan: DiallingPlan | None = None
    numbers: list[NumberEntry] = field(default_factory=list)
    default_outgoing_number: str = ""
    users: dict[str, str | None] = field(default_factory=dict)
    apply_to_users_with_own_number: bool = False
    local_presence: bool = False
    rules: list[Rule] = field(default_factory=list)
    user_names: dict[str, str] = field(default_factory=dict)
    withheld_users: set[str] = field(default_factory=set)
    top: Fields = field(default_factory=dict)
    """Every top-level entry, for the settings parsed by rules.settings."""
    valid_numbers: set[str] = field(default_factory=set)
    declared_numbers: set[str] = field(default_factory=set)


@dataclass
class _Numbers:
    """Numbers as written: `declared` holds even invalid ones, so references to them do not
    repeat the error already reported where they are declared."""

    declared: set[str] = field(default_factory=set)
    valid: set[str] = field(default_factory=set)


def parse(root: Node | None, c: Collector) -> Parsed:
    parsed = Parsed()
    if root is None or _is_null(root):
        c.error(1, "the file is empty: it needs country, numbers and default_outgoing_number")
        return parsed
    top = _mapping(root, c, "the file", TOP_KEYS)
    if top is None:
        return parsed
    for key in ("country", "numbers", "default_outgoing_number"):
        if key not in top:
            c.error(root, f"missing key {key!r}")
    if "country" in top:
        parsed.plan = _country(top["country"][1], c)
    numbers = _Numbers()
    if "numbers" in top:
        parsed.numbers = _numbers(top["numbers"][1], c, numbers)
    if "default_outgoing_number" in top:
        default_node = top["default_outgoing_number"][1]
        value = _number_ref(default_node, c, "default_outgoing_number", numbers)
        parsed.default_outgoing_number = value or ""
    if "users" in top:
        _users(top["users"][1], c, numbers, parsed)
    if "advanced_rules" in top:
        _advanced(top["advanced_rules"][1], c, numbers, parsed)
    parsed.top = top
    parsed.valid_numbers, parsed.declared_numbers = numbers.valid, numbers.declared
    return parsed


def _is_null(node: Node | None) -> bool:
    """An empty value (`key:` with nothing after it), which YAML reads as null."""
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


def _mapping(
    node: Node, c: Collector, where: str, allowed: tuple[str, ...] | None, key_label: str = "key"
) -> Fields | None:
    """The mapping's entries by key; reports non-string, duplicate and unknown keys."""
    if not isinstance(node, MappingNode):
        c.error(node, f"{where} must be a mapping, got {kind_of(node)}")
        return None
    fields: Fields = {}
    for key_node, value_node in node.value:
        key = _string(key_node, c, key_label)
        if key is None:
            continue
        if key in fields:
            first = line_of(fields[key][0])
            c.error(key_node, f"duplicate {key_label} {key!r} (first at line {first})")
            continue
        if allowed is not None and key not in allowed:
            c.error(key_node, _unknown_key(key, where, allowed))
            continue
        fields[key] = (key_node, value_node)
    return fields


def _unknown_key(key: str, where: str, allowed: Iterable[str]) -> str:
    options = list(allowed)
    message = f"unknown key {key!r} in {where} (expected one of: {', '.join(options)})"
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.7)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def _string(node: Node, c: Collector, what: str) -> str | None:
    """A string scalar, or None after reporting why not.

    YAML 1.1 reads unquoted 0044 as the integer 36, +44 as 44 and NO as false; the text the
    administrator meant is lost, so the only fix is to quote it.
    """
    if isinstance(node, ScalarNode) and node.tag == STR_TAG:
        return str(node.value)
    if _is_null(node):
        c.error(node, f"{what} is empty")
    elif isinstance(node, ScalarNode):
        c.error(
            node,
            f"{what}: unquoted {node.value} is read by YAML as {kind_of(node)}; "
            f'quote it: "{node.value}"',
        )
    else:
        c.error(node, f"{what} must be a string, got {kind_of(node)}")
    return None


def _country(node: Node, c: Collector) -> DiallingPlan | None:
    country = _string(node, c, "country")
    if country is None:
        return None
    try:
        return DiallingPlan.for_country(country)
    except ValueError:
        hint = ""
        if country.upper() in phonenumbers.SUPPORTED_REGIONS:
            hint = f"; did you mean {country.upper()!r}?"
        elif country.upper() == "UK":
            hint = "; the United Kingdom is 'GB'"
        c.error(node, f"country {country!r} is not an ISO 3166 alpha-2 region code{hint}")
        return None


def _numbers(node: Node, c: Collector, numbers: _Numbers) -> list[NumberEntry]:
    if _is_null(node) or (isinstance(node, SequenceNode) and not node.value):
        c.error(node, "numbers is empty: list the company's numbers (the only numbers shown)")
        return []
    if not isinstance(node, SequenceNode):
        c.error(node, f"numbers must be a list, got {kind_of(node)}")
        return []
    entries: list[NumberEntry] = []
    first_line: dict[str, int] = {}
    for item in node.value:
        number_node, name = _number_item(item, c)
        if number_node is None:
            continue
        number = _string(number_node, c, "number")
        if number is None:
            continue
        numbers.declared.add(number)
        problem = e164_problem(number)
        if problem is not None:
            c.error(number_node, f"number {problem}")
        elif number in first_line:
            c.error(number_node, f"duplicate number {number} (first at line {first_line[number]})")
        else:
            first_line[number] = line_of(number_node)
            numbers.valid.add(number)
            entries.append(NumberEntry(number, name, line_of(number_node)))
    return entries


def _number_item(item: Node, c: Collector) -> tuple[Node | None, str | None]:
    """A numbers entry is either the number itself or {number, name}."""
    if not isinstance(item, MappingNode):
        return item, None
    fields = _mapping(item, c, "a numbers entry", NUMBER_KEYS)
    if fields is None:
        return None, None
    if "number" not in fields:
        c.error(item, "numbers entry has no 'number'")
        return None, None
    name: str | None = None
    if "name" in fields:
        name_node = fields["name"][1]
        name = _string(name_node, c, "name")
        problem = name_problem(name) if name is not None else None
        if problem is not None:
            c.error(name_node, f"name {problem}")
    return fields["number"][1], name


def _number_ref(node: Node, c: Collector, what: str, numbers: _Numbers) -> str | None:
    """A reference to one of `numbers`: only the company's own numbers may be shown."""
    number = _string(node, c, what)
    if number is None:
        return None
    if number in numbers.declared:
        return number if number in numbers.valid else None
    problem = e164_problem(number)
    if problem is not None:
        c.error(node, f"{what}: {problem}")
    else:
        c.error(node, f"{what}: {number} is not in numbers (only the company's numbers are shown)")
    return None


def _users(node: Node, c: Collector, numbers: _Numbers, parsed: Parsed) -> None:
    if _is_null(node):
        return
    fields = _mapping(node, c, "users", None, key_label="user")
    if fields is None:
        return
    for user, (key_node, value_node) in fields.items():
        problem = user_problem(user)
        if problem is not None:
            c.error(key_node, problem)
            continue
        if isinstance(value_node, MappingNode):
            _user_mapping(user, value_node, c, numbers, parsed)
            continue
        number = _user_number(user, value_node, c, numbers)
        if number == ANONYMOUS:
            parsed.withheld_users.add(user)
            number = None
        parsed.users[user] = number


def _user_number(user: str, node: Node, c: Collector, numbers: _Numbers) -> str | None:
    """A user's own number: one of numbers, or None for `default`; ANONYMOUS when withheld."""
    what = f"user {user!r}"
    if _is_null(node):
        c.error(node, f"{what} has no number: give one from numbers, {DEFAULT} or {ANONYMOUS}")
        return None
    if isinstance(node, ScalarNode) and node.value in (DEFAULT, ANONYMOUS):
        return None if node.value == DEFAULT else ANONYMOUS
    if isinstance(node, ScalarNode) and str(node.value).lower() in (DEFAULT, ANONYMOUS):
        c.error(node, f"{what}: write {str(node.value).lower()} in lower case, not {node.value}")
        return None
    return _number_ref(node, c, what, numbers)


def _user_mapping(
    user: str, node: MappingNode, c: Collector, numbers: _Numbers, parsed: Parsed
) -> None:
    """`"1001": {number: "+32...", name: "ACME Sales", withheld: false}`."""
    fields = _mapping(node, c, f"user {user!r}", USER_KEYS)
    if fields is None:
        return
    number: str | None = None
    if "number" in fields:
        number = _user_number(user, fields["number"][1], c, numbers)
    if number == ANONYMOUS or ("withheld" in fields and _bool(fields["withheld"][1], c)):
        parsed.withheld_users.add(user)
    parsed.users[user] = None if number == ANONYMOUS else number
    if "name" in fields:
        name_node = fields["name"][1]
        name = _string(name_node, c, f"user {user!r} name")
        problem = name_problem(name) if name is not None else None
        if problem is not None:
            c.error(name_node, f"name {problem}")
        elif name is not None:
            parsed.user_names[user] = name


def _bool(node: Node, c: Collector, what: str = "withheld") -> bool:
    value = yaml_value(node) if isinstance(node, ScalarNode) else None
    if node.tag == BOOL_TAG and isinstance(value, bool):
        return value
    c.error(node, f"{what} must be true or false, got {kind_of(node)}")
    return False


def _advanced(node: Node, c: Collector, numbers: _Numbers, parsed: Parsed) -> None:
    if _is_null(node):
        return
    fields = _mapping(node, c, "advanced_rules", ADVANCED_KEYS)
    if fields is None:
        return
    for key in ("apply_to_users_with_own_number", "local_presence"):
        if key in fields:
            setattr(parsed, key, _bool(fields[key][1], c, key))
    if "rules" in fields:
        parsed.rules = _rules(fields["rules"][1], c, numbers, parsed.plan)


def _rules(node: Node, c: Collector, numbers: _Numbers, plan: DiallingPlan | None) -> list[Rule]:
    if _is_null(node):
        return []
    if not isinstance(node, SequenceNode):
        c.error(node, f"advanced_rules.rules must be a list, got {kind_of(node)}")
        return []
    rules: list[Rule] = []
    for position, item in enumerate(node.value, start=1):
        rule = _rule(position, item, c, numbers, plan)
        if rule is not None:
            rules.append(rule)
    return rules


def _rule(
    position: int, item: Node, c: Collector, numbers: _Numbers, plan: DiallingPlan | None
) -> Rule | None:
    fields = _mapping(item, c, f"rule #{position}", RULE_KEYS)
    if fields is None:
        return None
    for key in RULE_KEYS:
        if key not in fields:
            c.error(item, f"rule #{position} has no {key!r}")
    number: str | None = None
    if "number" in fields:
        number_node = fields["number"][1]
        if isinstance(number_node, ScalarNode) and number_node.value == ANONYMOUS:
            number = ANONYMOUS
        else:
            number = _number_ref(number_node, c, f"rule #{position} number", numbers)
    digits: str | None = None
    prefix: str | None = None
    if "destination_prefix" in fields:
        prefix_node = fields["destination_prefix"][1]
        prefix = _string(prefix_node, c, "destination_prefix")
        if prefix is not None:
            try:
                digits = _prefix_digits(prefix, plan)
            except ValueError as exc:
                c.error(prefix_node, str(exc))
    if number is None or digits is None or prefix is None:
        return None
    return Rule(position, prefix, digits, number, line_of(item), number == ANONYMOUS)


def _prefix_digits(prefix: str, plan: DiallingPlan | None) -> str | None:
    """Raises ValueError for a bad prefix; None when it cannot be judged without a country."""
    if plan is not None:
        return plan.prefix_digits(prefix)
    # The international prefix depends on the country, already reported as wrong; still
    # catch what is wrong in any country so the administrator sees it in the same run.
    text = strip_separators(prefix.strip()).removeprefix("+")
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"destination_prefix {prefix!r} must be digits after an optional '+'")
    return None


def helpers(c: Collector, parsed: Parsed) -> Helpers:
    """The readers rules.settings uses, so its messages read like the schema's."""
    numbers = _Numbers(parsed.declared_numbers, parsed.valid_numbers)
    return Helpers(
        string=_string,
        mapping=_mapping,
        boolean=_bool,
        number_ref=lambda node, what: _number_ref(node, c, what, numbers),
    )
