"""The `run` settings as one declarative table: each row is a flag and a `--config` key.

A value from either place goes through the row's parser; a parser raises ValueError saying what
it expected, and the caller prefixes where the value came from (`--max-message` or
`proxy.yaml:7: max_message`), so no setting is ever refused without its name.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

Parser = Callable[[object], Any]


@dataclass(frozen=True)
class Setting:
    """One row: `name` is the config key; the flag is `--name` with dashes."""

    name: str
    parse: Parser
    default: Any
    help: str
    metavar: str | None = None
    repeatable: bool = False  # a list: the flag is repeated, the key takes a list or one value
    path: bool = False  # a file name: relative to the config file's directory
    required: bool = False
    const: object = None  # not None: the flag takes no value and stores this (--tls-no-verify)
    flag_name: str | None = None  # the flag, when not --name-with-dashes
    hidden: bool = False  # left out of --help (internal settings)

    @property
    def option(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")


class SettingsError(ValueError):
    """A ValueError, so that a row's parser may raise it too."""


def suggestion(word: str, candidates: Sequence[str]) -> str:
    """' (did you mean X?)' for a close candidate, else ''."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


# ----------------------------------------------------------------- value descriptions
def describe(value: object) -> str:
    """A value as the operator wrote it, for "expected X, got Y"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, list | tuple):
        return f"a list {list(value)!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _text(value: object, expected: str) -> str:
    """Scalars YAML read as numbers are fine where text is expected (port 5060, a secret 1234)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected {expected}, got {describe(value)}")


# ----------------------------------------------------------------- parsers (object -> value)
def text(value: object) -> str:
    result = _text(value, "text")
    if not result:
        raise ValueError("expected text, got nothing")
    return result


def integer(minimum: int, maximum: int) -> Parser:
    def parse(value: object) -> int:
        expected = f"a whole number from {minimum} to {maximum}"
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"expected {expected}, got {describe(value)}")
        raw = value.strip().replace("_", "") if isinstance(value, str) else str(value)
        if not re.fullmatch(r"[0-9]+", raw) or not minimum <= int(raw) <= maximum:
            raise ValueError(f"expected {expected}, got {describe(value)}")
        return int(raw)

    return parse


def seconds(minimum: float, maximum: float) -> Parser:
    def parse(value: object) -> float:
        expected = f"a number of seconds from {minimum:g} to {maximum:g}"
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"expected {expected}, got {describe(value)}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected {expected}, got {describe(value)}") from None
        if not minimum <= number <= maximum:  # also refuses nan
            raise ValueError(f"expected {expected}, got {describe(value)}")
        return number

    return parse


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else ""
    if word in _TRUE + _FALSE:
        return word in _TRUE
    raise ValueError(f"expected true or false, got {describe(value)}")


def choice(*options: str) -> Parser:
    def parse(value: object) -> str:
        word = _text(value, "one of " + ", ".join(options)).lower()
        if word not in options:
            raise ValueError(
                f"expected one of {', '.join(options)}, got {describe(value)}"
                + suggestion(word, options)
            )
        return word

    return parse


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def host_name(value: object) -> str:
    """An IP literal (normalised; IPv6 with or without brackets) or a DNS name, kept as written
    but lower-cased: a name goes into Via and Record-Route as is (RFC 3261 25.1 `host`)."""
    word = _text(value, "an IP address or a host name").lower()
    bare = word[1:-1] if word.startswith("[") and word.endswith("]") else word
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    name = bare.removesuffix(".")
    labels = name.split(".")
    if (
        not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError(f"expected an IP address or a host name, got {describe(value)}")
    return name


def split_hostport(value: object) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT, not resolved."""
    raw = _text(value, "HOST:PORT")
    if raw.startswith("["):
        name, _, rest = raw[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port_text = raw.rpartition(":")
    if not name or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected HOST:PORT, got {describe(value)}")
    return name, int(port_text)


def network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    raw = _text(value, "an address or a network (CIDR)")
    try:
        return ipaddress.ip_network(raw, strict=False)
    except ValueError as error:
        raise ValueError(f"expected an address or a network (CIDR), got {describe(value)}: "
                         f"{error}") from None


def file_path(value: object) -> Path:
    if isinstance(value, Path):
        return value
    result = _text(value, "a file name")
    if not result:
        raise ValueError("expected a file name, got nothing")
    return Path(result)


def listed(parse: Parser) -> Parser:
    """A repeatable setting: each item through `parse`; the message names the item."""

    def parse_all(value: object) -> list[Any]:
        items = value if isinstance(value, list | tuple) else [value]
        parsed = []
        for index, item in enumerate(items, 1):
            try:
                parsed.append(parse(item))
            except ValueError as error:
                prefix = f"item {index}: " if len(items) > 1 else ""
                raise ValueError(prefix + str(error)) from None
        return parsed

    return parse_all


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


def table(rows: Sequence[Setting]) -> dict[str, Setting]:
    return {row.name: row for row in rows}


def add_flags(parser: argparse.ArgumentParser, rows: dict[str, Setting]) -> None:
    """One flag per row; every flag keeps its raw text (None when absent) for `validate`."""
    for row in rows.values():
        shown = argparse.SUPPRESS if row.hidden else row.help
        if row.const is not None:
            parser.add_argument(row.option, dest=row.name, action="store_const",
                                const=row.const, help=shown)
            continue
        parser.add_argument(
            row.option, dest=row.name, metavar=row.metavar, help=shown,
            action="append" if row.repeatable else "store",
        )


def validate(
    rows: dict[str, Setting], given: dict[str, Any], origins: dict[str, str]
) -> dict[str, Any]:
    """Every row's value, parsed: the given one (from a flag or the file) or the default.
    Raises SettingsError naming the setting, and the file and line when it came from there."""
    values: dict[str, Any] = {}
    for name, row in rows.items():
        raw = given.get(name)
        if raw is None:
            if row.required:
                raise SettingsError(f"{row.option} is required")
            values[name] = row.default
            continue
        try:
            values[name] = row.parse(raw)
        except ValueError as error:
            raise SettingsError(f"{origins.get(name, row.option)}: {error}") from None
    return values


# ----------------------------------------------------------------- the config file
@dataclass(frozen=True)
class FileSettings:
    values: dict[str, Any]
    origins: dict[str, str]  # name -> "file:line: name", the prefix of its error messages


def read_config(path: Path, rows: dict[str, Setting]) -> FileSettings:
    """The file's settings as YAML built them, each with its line; unknown and repeated keys
    are refused here, values are checked by the rows' parsers later (after the flags)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"cannot read config {path}: {error}") from error
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return FileSettings({}, {})
        if not isinstance(root, MappingNode):
            raise SettingsError(f"{path}:{_line(root)}: expected a mapping of settings")
        return _settings_of(path, root, loader, rows)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SettingsError(f"cannot read config {where}: {error.problem or error}") from error
    except yaml.YAMLError as error:
        raise SettingsError(f"cannot read config {path}: {error}") from error
    finally:
        loader.dispose()


def _settings_of(
    path: Path, root: MappingNode, loader: yaml.SafeLoader, rows: dict[str, Setting]
) -> FileSettings:
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key_node, value_node in root.value:
        key = str(key_node.value)
        where = f"{path}:{_line(key_node)}"
        if not isinstance(key_node, ScalarNode) or key not in rows:
            raise SettingsError(
                f"{where}: unknown setting {key}" + suggestion(key, sorted(rows))
            )
        if key in values:
            raise SettingsError(f"{where}: {key} is given twice")
        values[key] = loader.construct_object(value_node, deep=True)
        origins[key] = f"{path}:{_line(value_node)}: {key}"
        if rows[key].path and isinstance(values[key], str) and values[key]:
            given = Path(values[key])
            values[key] = given if given.is_absolute() else path.parent / given
    return FileSettings(values, origins)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1
