"""The base of the core's frozen value classes: what `@dataclass(frozen=True, slots=True)` gave
them (immutability, field equality and hash, a readable repr, `__match_args__`), with an
`__init__` the subclass writes itself.

Why not a dataclass: mypyc compiles a dataclass's layout but not its `__init__`, which the
dataclasses module generates as Python code at run time (~0.5 us per object, called per message
or call); an explicit `__init__` that sets the fields with `object.__setattr__` compiles to
native stores (~25 ns) and, as Python, is the very code the dataclass generated.

A subclass lists its fields once in `__match_args__` (the order of its `__init__`), sets
`__slots__ = __match_args__`, annotates them, and overrides `_values()` when some field takes no
part in equality or when the comparison is hot (a generic `getattr` loop otherwise).
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import ClassVar


class FrozenValue:
    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[object, ...]:
        """The fields that take part in equality and hash, in order."""
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, FrozenValue)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type[FrozenValue], tuple[object, ...]]:
        """copy, deepcopy and pickle rebuild the value with its `__init__` (a slotted class's
        default would set the fields one by one, which `__setattr__` refuses)."""
        return (type(self), tuple([getattr(self, name) for name in self.__match_args__]))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__qualname__}({fields})"
