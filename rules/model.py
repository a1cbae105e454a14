"""The loaded, validated rules and the decision taken for one call. All immutable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rules.dialling import DiallingPlan
from rules.emergency import EmergencyPlan
from rules.formats import TrunkFormat

ANONYMOUS = "anonymous"
"""Written instead of a number (a user's or a rule's): the call is withheld (RFC 3323)."""

PRIVACY_ID = "id"


@dataclass(frozen=True, slots=True)
class NumberEntry:
    """One of the company's own numbers (E.164), the only numbers ever shown."""

    number: str
    name: str | None
    line: int


@dataclass(frozen=True, slots=True)
class Rule:
    """One advanced rule. `index` is 1-based, as people count rules in the file.

    `number` is ANONYMOUS for a rule that withholds the caller ID (`withheld` is then true).
    """

    index: int
    prefix: str
    digits: str
    number: str
    line: int
    withheld: bool = False


# eq=False: equality of loaded files is what `version` is for, and the read-only mappings
# inside are not hashable, so the generated __eq__/__hash__ would only mislead.
@dataclass(frozen=True, eq=False, slots=True)
class Rules:
    source: str
    version: str
    country: str
    numbers: tuple[NumberEntry, ...]
    default_outgoing_number: str
    users: Mapping[str, str | None]
    """Every listed user: their own number, or None for `default` (and for `anonymous`)."""
    apply_to_users_with_own_number: bool
    rules: tuple[Rule, ...]
    warnings: tuple[str, ...]
    dialling: DiallingPlan
    names: Mapping[str, str | None]
    """Display name of every number in `numbers` (None when it has none)."""
    prefix_index: Mapping[str, Rule]
    """First rule for each distinct prefix (international digits), for per-call lookup."""
    longest_prefix: int
    user_names: Mapping[str, str]
    """Display name of the users that have one (shown instead of the number's name)."""
    withheld_users: frozenset[str]
    local_presence: bool
    presence_index: Mapping[str, str]
    """Leading international digits -> the first owned number starting with them (never
    shorter than that number's country code), for local presence."""
    own_number_digits: Mapping[str, str]
    """International digits (no '+') of every owned number -> the number."""
    emergency: EmergencyPlan
    emergency_number: str | None
    user_source: tuple[str, ...]
    keep_pbx_display_name: bool
    default_trunk: TrunkFormat
    trunk_formats: Mapping[int, TrunkFormat]
    """Per trunk position (1 = the proxy's first trunk); the others use `default_trunk`."""
    formatted: Mapping[str, Mapping[str, str]]
    """Every owned number written in every number format (see rules.formats.NUMBER_FORMATS)."""

    @property
    def users_with_own_number(self) -> int:
        return sum(1 for number in self.users.values() if number is not None)

    def trunk_format(self, position: int) -> TrunkFormat:
        return self.trunk_formats.get(position, self.default_trunk)


@dataclass(frozen=True, slots=True)
class Decision:
    """What one call shows, and why (`reason` names the resolution step and rule).

    For a withheld call (`privacy` is "id") `number` is the number carried in
    P-Asserted-Identity, the one that would otherwise have been shown.
    """

    number: str
    name: str | None
    reason: str
    step: str = ""
    """"step 1".."step 4", "local presence" or "emergency": the start of `reason`."""
    rule: int | None = None
    """The advanced rule's index for step 2."""
    privacy: str | None = None
    user: str = ""
    """The user the decision is for (after user_source)."""
