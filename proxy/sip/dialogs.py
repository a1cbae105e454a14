"""A bounded memory of the dialogs this proxy rewrote, by Call-ID and the PBX's tag.

The signed Record-Route token stays the primary state: it survives restarts and works across
instances. This memory is the fallback for peers that drop the route set (a trunk that does not
echo Record-Route, a PBX that sends in-dialog requests without Route): the process that saw the
INVITE can still rewrite and restore them. Bounded in size and age, refreshed on use.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from proxy.sip.identity import DialogIdentity

DEFAULT_CAPACITY = 100_000
DEFAULT_TTL = 6 * 3600.0  # seconds without any in-dialog traffic before a dialog is forgotten


@dataclass(frozen=True, slots=True)
class RememberedDialog:
    identity: DialogIdentity
    trunk_index: int
    expires: float


# Stored as a tuple of atoms (original From, rewritten From, trunk, expiry): the garbage
# collector stops tracking such tuples, so 100,000 remembered dialogs cost a full collection
# nothing; the record above is built only when one is recalled.
_Entry = tuple[bytes, bytes, int, float]


class DialogMemory:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, ttl: float = DEFAULT_TTL) -> None:
        self._capacity = capacity
        self._ttl = ttl
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(
        self, call_id: str, pbx_tag: str, identity: DialogIdentity, trunk_index: int, now: float
    ) -> None:
        key = (call_id, pbx_tag)
        self._entries[key] = (
            identity.original_from, identity.rewritten_from, trunk_index, now + self._ttl
        )
        self._entries.move_to_end(key)
        self._evict(now)

    def forget(self, call_id: str, pbx_tag: str) -> None:
        self._entries.pop((call_id, pbx_tag), None)

    def recall(self, call_id: str, pbx_tag: str | None, now: float) -> RememberedDialog | None:
        if pbx_tag is None:
            return None
        key = (call_id, pbx_tag)
        entry = self._entries.get(key)
        if entry is None or entry[3] < now:
            return None
        original, rewritten, trunk_index, _ = entry
        expires = now + self._ttl
        self._entries[key] = (original, rewritten, trunk_index, expires)
        self._entries.move_to_end(key)
        return RememberedDialog(DialogIdentity(original, rewritten), trunk_index, expires)

    def shrink(self) -> None:
        """Give back the capacity a flood left (issue 7: an OrderedDict keeps its hash table and
        node index at their peak size), keeping the order. O(len): for quiet moments."""
        entries = list(self._entries.items())
        self._entries.clear()
        self._entries.update(entries)

    def _evict(self, now: float) -> None:
        """Oldest first: over capacity, or idle past the TTL (the order is last use)."""
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if len(self._entries) <= self._capacity and oldest[3] >= now:
                return
            self._entries.popitem(last=False)
