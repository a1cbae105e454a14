"""Parse YAML into composer nodes, which keep the line of every key and value.

The validator works on nodes rather than on `safe_load` output so every error can name its
line, and so it can see which scalars YAML 1.1 silently turned into numbers or booleans.
"""

from __future__ import annotations

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

from rules.errors import RulesError

STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"
BOOL_TAG = "tag:yaml.org,2002:bool"

__all__ = ["MappingNode", "Node", "ScalarNode", "SequenceNode", "compose", "line_of"]


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def compose(text: str, filename: str) -> Node | None:
    """The document's root node, None for an empty document. Raises RulesError on bad YAML."""
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            problem = f"{exc.problem} ({exc.context})"
        raise RulesError([f"{filename}:{line}: invalid YAML: {problem}"]) from exc
    except yaml.reader.ReaderError as exc:
        # Reader errors (a raw control character) carry a character position, not a mark.
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        code = char if isinstance(char, int) else ord(char[:1] or "\0")
        problem = f"character U+{code:04X} is not allowed in YAML ({exc.reason})"
        raise RulesError([f"{filename}:{line}: invalid YAML: {problem}"]) from exc
    except yaml.YAMLError as exc:
        raise RulesError([f"{filename}:1: invalid YAML: {exc}"]) from exc


def kind_of(node: Node) -> str:
    """How YAML read a node, in words, for "expected X, got Y" messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == NULL_TAG:
        return "empty"
    if node.tag == STR_TAG:
        return "a string"
    value = yaml_value(node)
    return f"the {type(value).__name__} {_yaml_literal(value)}"


def yaml_value(node: Node) -> object:
    """What YAML 1.1 constructs from a scalar, e.g. 36 for an unquoted 0044."""
    try:
        return SafeConstructor().construct_object(node, deep=True)
    except Exception:
        # An explicit tag on a value it cannot build (`!!timestamp x`, `!!bool x`) makes
        # PyYAML's constructors raise AttributeError, KeyError, ValueError...; the value is
        # then reported as written instead of crashing the load.
        return node.value


def _yaml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
