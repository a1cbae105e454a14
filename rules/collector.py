"""Collects every error and warning of one load, so they are all reported together."""

from __future__ import annotations

from rules.errors import RulesError
from rules.yaml_source import Node, line_of


class Collector:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self._errors: list[tuple[int, str]] = []
        self._warnings: list[tuple[int, str]] = []

    def error(self, where: Node | int, message: str) -> None:
        self._errors.append((_line(where), message))

    def warn(self, where: Node | int, message: str) -> None:
        self._warnings.append((_line(where), message))

    @property
    def failed(self) -> bool:
        return bool(self._errors)

    def warnings(self) -> tuple[str, ...]:
        return self._format(self._warnings)

    def error_to_raise(self) -> RulesError:
        return RulesError(self._format(self._errors), self.warnings())

    def _format(self, items: list[tuple[int, str]]) -> tuple[str, ...]:
        # Sorted by line (stable) so the report reads top to bottom like the file.
        ordered = sorted(items, key=lambda item: item[0])
        return tuple(f"{self.filename}:{line}: {message}" for line, message in ordered)


def _line(where: Node | int) -> int:
    return where if isinstance(where, int) else line_of(where)
