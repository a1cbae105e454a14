"""Header values parsed lately, by their text: the same value is not parsed twice.

Within a call the same header values come back again and again: the From and To the proxy
forwarded return in every response, the PBX's Via in every response below ours, the Route the
PBX copies from our Record-Route in every in-dialog request. Validating them (RFC 3261 16.3,
RFC 4475) is much of the grammar work per message. The grammar is a pure function of a value's
text, and its spans are relative to where the value starts, so a value parsed once answers for
the same text anywhere: the parse is kept at offset 0 and moved to the new offset (a tuple, no
regex). A value the grammar refuses is never kept; it is refused again each time.

One memo belongs to one core (no global state). It is bounded, in values and in their length
(a longer one is parsed every time): when a table is full it is emptied, which costs one parse
per value afterwards, never a wrong answer. Each message gets a parse of its own (its own params
dict), and what the tables keep is invisible to the cyclic GC; tests/proxy/sip/test_value_memo.py
holds both.
"""

from __future__ import annotations

from typing import Final, cast

from proxy.sip.grammar import NameAddr, Via, parse_name_addr, parse_via_value

DEFAULT_LIMIT: Final = 2048  # values per table: a few hundred calls' worth
# Longer values are parsed every time and never kept: the tables stay within a few MB however
# long the values a peer sends (a usual From, To or Via is 40 to 150 characters).
LONGEST_KEPT: Final = 320

_new: Final = tuple.__new__  # as the grammar builds them (a NamedTuple's __new__ is Python)


# What a table keeps: the parse at offset 0 as ONE flat tuple of atoms (the fields, then each
# parameter's name and value). A tuple holding a dict stays tracked by the cyclic GC for ever,
# and one holding other tuples only after as many collections as it nests; a flat tuple of atoms
# is untracked by the first collection it survives, so a full memo costs the collections
# nothing (bench/bench_calls.py prints them).
_Kept = tuple[object, ...]
_NAME_ADDR_FIELDS: Final = 7  # end, display, uri, uri_start, uri_end, bracketed, params_start
_VIA_FIELDS: Final = 5  # end, transport, host, port, params_end


def _params_of(kept: _Kept, first: int) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for index in range(first, len(kept), 2):
        params[cast(str, kept[index])] = cast("str | None", kept[index + 1])
    return params


class ValueMemo:
    """`name_addr` and `via` answer as `parse_name_addr` and `parse_via_value` do."""

    __slots__ = ("_name_addrs", "_vias", "limit")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._name_addrs: dict[str, _Kept] = {}
        self._vias: dict[str, _Kept] = {}

    def __len__(self) -> int:
        return len(self._name_addrs) + len(self._vias)

    def name_addr(self, value: str, offset: int) -> NameAddr:
        """`parse_name_addr(value, offset)` (the whole of `value`)."""
        kept = self._name_addrs.get(value)
        if kept is None:
            parsed = parse_name_addr(value, offset)  # a SipError propagates: nothing kept
            fields: list[object] = [
                parsed.end - offset,
                parsed.display_name,
                parsed.uri,
                parsed.uri_start - offset,
                parsed.uri_end - offset,
                parsed.bracketed,
                parsed.params_start - offset,
            ]
            self._keep(self._name_addrs, value, fields, parsed.params)
            return parsed
        return _new(
            NameAddr,
            (
                offset,  # a name-addr's span is the whole value
                cast(int, kept[0]) + offset,
                kept[1],
                kept[2],
                cast(int, kept[3]) + offset,
                cast(int, kept[4]) + offset,
                kept[5],
                _params_of(kept, _NAME_ADDR_FIELDS),
                cast(int, kept[6]) + offset,
            ),
        )

    def via(self, value: str, offset: int, header_index: int) -> Via:
        """`parse_via_value(value, offset, header_index)`."""
        kept = self._vias.get(value)
        if kept is None:
            parsed = parse_via_value(value, offset, header_index)
            fields: list[object] = [
                parsed.end - offset,
                parsed.transport,
                parsed.host,
                parsed.port,
                parsed.params_end - offset,
            ]
            self._keep(self._vias, value, fields, parsed.params)
            return parsed
        return _new(
            Via,
            (
                header_index,
                offset,  # a Via's span is the whole value
                cast(int, kept[0]) + offset,
                kept[1],
                kept[2],
                kept[3],
                _params_of(kept, _VIA_FIELDS),
                cast(int, kept[4]) + offset,
            ),
        )


    def _keep(
        self,
        table: dict[str, _Kept],
        value: str,
        fields: list[object],
        params: dict[str, str | None],
    ) -> None:
        """Keep a parse of `value` (its fields at offset 0, then its params), unless the value
        is too long; a full table is emptied first."""
        if len(value) > LONGEST_KEPT:
            return
        if len(table) >= self.limit:
            table.clear()
        for name, param_value in params.items():
            fields.append(name)
            fields.append(param_value)
        table[value] = tuple(fields)  # one flat tuple, made after its atoms


class NoMemo(ValueMemo):
    """Parses every time: for messages parsed outside a core (tools, tests, the glances)."""

    __slots__ = ()

    def name_addr(self, value: str, offset: int) -> NameAddr:
        return parse_name_addr(value, offset)

    def via(self, value: str, offset: int, header_index: int) -> Via:
        return parse_via_value(value, offset, header_index)
