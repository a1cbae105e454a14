"""Event counts by name, kept unboxed (issue 7: RSS back near idle after a flood).

A `collections.Counter` keeps each count as an int object, and past 256 every `+= 1` makes a new
one that then lives on: the last value of a count bumped all through a flood sits in a pymalloc
pool allocated during the flood and pins its whole 1 MiB arena long after the flood's own objects
are gone. Here the values live in an `array('q')` (machine integers, no object per value): an
increment only makes a temporary int, freed at once. The API is the part of Counter the code
uses: `counts[name] += 1` (a missing name reads 0 and is not added by the read), `get` (0 by
default), `in`, iteration, `len`, `keys`/`values`/`items` and `dict(counts)`; and `add`, the
increment in one lookup.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Final, Generic, TypeVar

K = TypeVar("K")
# Slots reserved up front: 1 KiB, past pymalloc's 512-byte blocks, so the values' buffer is one
# malloc'd block made at start-up, never re-made (and left in a flood's pool) when a name first
# counted during a flood (timeouts, a refusal) needs one more slot.
RESERVED: Final = 128


class Counts(Generic[K]):
    """A Counter-like mapping of names to non-negative counts with unboxed values."""

    def __init__(self) -> None:
        self._index: dict[K, int] = {}  # name -> slot in _values, in first-count order
        self._values: array[int] = array("q", bytes(8 * RESERVED))

    def __getitem__(self, name: K) -> int:
        slot = self._index.get(name)
        return 0 if slot is None else self._values[slot]

    def __setitem__(self, name: K, value: int) -> None:
        slot = self._index.get(name)
        if slot is None:
            slot = len(self._index)
            if slot == len(self._values):
                self._values.extend(array("q", bytes(8 * slot)))  # doubled: rare, amortised
            self._index[name] = slot
        self._values[slot] = value

    def add(self, name: K, amount: int = 1) -> None:
        """`counts[name] += amount` with one lookup instead of two (a count bumped per message)."""
        slot = self._index.get(name)
        if slot is None:
            self[name] = amount
        else:
            self._values[slot] += amount

    def get(self, name: K, default: int = 0) -> int:
        slot = self._index.get(name)
        return default if slot is None else self._values[slot]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[K]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> list[K]:
        return list(self._index)

    def values(self) -> list[int]:
        return self._values[: len(self._index)].tolist()

    def items(self) -> list[tuple[K, int]]:
        return list(zip(self._index, self._values[: len(self._index)], strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Counts):
            return dict(self.items()) == dict(other.items())
        return dict(self.items()) == other

    def __repr__(self) -> str:
        return f"Counts({dict(self.items())!r})"
