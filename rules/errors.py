"""The one exception the rules package raises: every problem found in a rules file, at once."""

from __future__ import annotations

from collections.abc import Sequence


class RulesError(Exception):
    """A rules file could not be loaded.

    `errors` holds every problem as "file:line: message" so an administrator fixes them all in
    one edit instead of one per run. `warnings` carries the warnings found before giving up,
    because `check` prints warnings whether or not the file loads.
    """

    def __init__(self, errors: Sequence[str], warnings: Sequence[str] = ()) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        self.warnings: tuple[str, ...] = tuple(warnings)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)
