"""`load` and `loads`: text to an immutable `Rules`, or one `RulesError` listing every problem."""

from __future__ import annotations

import hashlib
import os
from types import MappingProxyType

from rules.collector import Collector
from rules.errors import RulesError
from rules.model import Rules
from rules.schema import parse
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
    index, hidden = index_rules(parsed.rules)
    for line, message in hidden:
        collector.warn(line, message)
    if collector.failed or parsed.plan is None:
        raise collector.error_to_raise()
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
    )
