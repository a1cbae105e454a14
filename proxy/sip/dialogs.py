"""A bounded memory of the dialogs this proxy rewrote, by Call-ID and the PBX's tag.

The signed Record-Route token stays the primary state: it survives restarts and works across
instances. This memory is the fallback for peers that drop the route set (a trunk that does not
echo Record-Route, a PBX that sends in-dialog requests without Route): the process that saw the
INVITE can still rewrite and restore them. Bounded in size and age, refreshed on use.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from proxy.sip.identity import DialogIdentity

DEFAULT_CAPACITY: Final = 100_000
# seconds without any in-dialog traffic before a dialog is forgotten
DEFAULT_TTL: Final = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class RememberedDialog:
    identity: DialogIdentity
    trunk_index: int
    expires: float


# One entry is two objects: the key `call_id NUL pbx_tag` (NUL is in no SIP token) and one
# bytes value (expiry, trunk, length of the original From, then both From values), so the
# garbage collector never tracks them (100,000 remembered dialogs cost a full collection
# nothing) and a dialog remembered during a flood keeps few pymalloc pools of the flood's alive
# (issue 7: RSS back near idle a minute after; a tuple of atoms was eight blocks of seven sizes).
# The record above is built only when one is recalled.
_HEADER: Final = struct.Struct("<dqI")  # expires, trunk index, len(original From)


def _key(call_id: str, pbx_tag: str) -> str:
    return f"{call_id}\x00{pbx_tag}"


def _entry(original: bytes, rewritten: bytes, trunk_index: int, expires: float) -> bytes:
    return _HEADER.pack(expires, trunk_index, len(original)) + original + rewritten


def _copied_key(key: str) -> str:
    """A new str equal to `key` (`str(key)` and slices of the whole return the same object)."""
    call_id, pbx_tag = key.split("\x00", 1)
    return _key(call_id, pbx_tag)


def _copied_entry(entry: bytes) -> bytes:
    """A new bytes equal to `entry`."""
    return bytes(bytearray(entry))


def _expires(entry: bytes) -> float:
    expires: float = _HEADER.unpack_from(entry)[0]
    return expires


class DialogMemory:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, ttl: float = DEFAULT_TTL) -> None:
        self._capacity = capacity
        self._ttl = ttl
        self._entries: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(
        self, call_id: str, pbx_tag: str, identity: DialogIdentity, trunk_index: int, now: float
    ) -> None:
        key = _key(call_id, pbx_tag)
        self._entries[key] = _entry(
            identity.original_from, identity.rewritten_from, trunk_index, now + self._ttl
        )
        self._entries.move_to_end(key)
        self._evict(now)

    def forget(self, call_id: str, pbx_tag: str) -> None:
        self._entries.pop(_key(call_id, pbx_tag), None)

    def recall(self, call_id: str, pbx_tag: str | None, now: float) -> RememberedDialog | None:
        if pbx_tag is None:
            return None
        key = _key(call_id, pbx_tag)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, trunk_index, split = _HEADER.unpack_from(entry)
        if expires < now:
            return None
        start = _HEADER.size
        original, rewritten = entry[start:start + split], entry[start + split:]
        expires = now + self._ttl
        self._entries[key] = _entry(original, rewritten, trunk_index, expires)
        self._entries.move_to_end(key)
        return RememberedDialog(DialogIdentity(original, rewritten), trunk_index, expires)

    def shrink(self) -> None:
        """Give back the capacity a flood left (issue 7: an OrderedDict keeps its hash table and
        node index at their peak size), keeping the order. O(len): for quiet moments.

        Each entry is re-made too (a new key and value, same contents): the dialogs of calls
        set up during a flood were allocated from the flood's pymalloc pools, one or two blocks
        per dialog spread over as many 1 MiB arenas, which stay mapped as long as the dialog is
        remembered. The copies are served from the first pools with room, side by side, and the
        originals' pools, and then arenas, are left empty and returned."""
        entries = [(_copied_key(key), _copied_entry(entry)) for key, entry in self._entries.items()]
        self._entries.clear()
        self._entries.update(entries)

    def _evict(self, now: float) -> None:
        """Oldest first: over capacity, or idle past the TTL (the order is last use)."""
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if len(self._entries) <= self._capacity and _expires(oldest) >= now:
                return
            self._entries.popitem(last=False)
