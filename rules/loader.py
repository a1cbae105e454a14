"""`load` and `loads`: text to an immutable `Rules`, or one `RulesError` listing every problem."""

from __future__ import annotations

import hashlib
import os
from types import MappingProxyType

from rules.checks import emergency_warnings
from rules.collector import Collector
from rules.emergency import EmergencyPlan
from rules.errors import RulesError
from rules.formats import formats_of
from rules.model import Rule, Rules
from rules.presence import presence_index
from rules.schema import Parsed, helpers, parse
from rules.settings import Settings, parse_settings
from rules.shadowing import index_rules
from rules.yaml_source import compose

VERSION_LENGTH = 12


def version_of(data: bytes) -> str:
    """Short content hash: the same bytes always give the same version, on every host."""
    return hashlib.sha256(data).hexdigest()[:VERSION_LENGTH]


def load(path: str | os.PathLike[str]) -> Rules:
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise RulesError([f"{filename}: cannot read: {exc.strerror or exc}"]) from exc
    return _load_bytes(data, filename)


def loads(text: str, filename: str = "<string>") -> Rules:
    # surrogatepass: a str holding a lone surrogate then fails decoding below, with its line,
    # instead of raising UnicodeEncodeError here.
    return _load_bytes(text.encode("utf-8", "surrogatepass"), filename)


def _load_bytes(data: bytes, filename: str) -> Rules:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RulesError([f"{filename}:{line}: the file is not UTF-8 text"]) from exc
    collector = Collector(filename)
    parsed = parse(compose(text, filename), collector)
    settings = parse_settings(parsed.top, collector, parsed.plan, helpers(collector, parsed))
    index, hidden = index_rules(parsed.rules)
    for line, message in hidden:
        collector.warn(line, message)
    if collector.failed or parsed.plan is None:
        raise collector.error_to_raise()
    emergency = EmergencyPlan.for_country(
        parsed.plan.country, settings.emergency_numbers, settings.outside_line_prefix
    )
    emergency_warnings(
        collector,
        country=parsed.plan.country,
        country_code=parsed.plan.country_code,
        plan=emergency,
        numbers=tuple(parsed.numbers),
        users=parsed.users,
        fallback=settings.emergency_number or parsed.default_outgoing_number,
    )
    return _build(data, filename, parsed, settings, emergency, index, collector)


def _build(
    data: bytes,
    filename: str,
    parsed: Parsed,
    settings: Settings,
    emergency: EmergencyPlan,
    index: dict[str, Rule],
    collector: Collector,
) -> Rules:
    assert parsed.plan is not None
    numbers = [entry.number for entry in parsed.numbers]
    prefix = parsed.plan.international_prefix_text
    return Rules(
        source=filename,
        version=version_of(data),
        country=parsed.plan.country,
        numbers=tuple(parsed.numbers),
        default_outgoing_number=parsed.default_outgoing_number,
        users=MappingProxyType(dict(parsed.users)),
        apply_to_users_with_own_number=parsed.apply_to_users_with_own_number,
        rules=tuple(parsed.rules),
        warnings=collector.warnings(),
        dialling=parsed.plan,
        names=MappingProxyType({entry.number: entry.name for entry in parsed.numbers}),
        prefix_index=MappingProxyType(index),
        longest_prefix=max((len(digits) for digits in index), default=0),
        user_names=MappingProxyType(dict(parsed.user_names)),
        withheld_users=frozenset(parsed.withheld_users),
        local_presence=parsed.local_presence,
        presence_index=MappingProxyType(presence_index(numbers)),
        own_number_digits=MappingProxyType({number[1:]: number for number in numbers}),
        emergency=emergency,
        emergency_number=settings.emergency_number,
        user_source=settings.user_source,
        keep_pbx_display_name=settings.keep_pbx_display_name,
        default_trunk=settings.default_trunk,
        trunk_formats=MappingProxyType(dict(settings.trunks)),
        formatted=MappingProxyType({number: formats_of(number, prefix) for number in numbers}),
    )
