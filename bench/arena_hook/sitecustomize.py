"""Loaded into the proxy process by bench/arena_pins.py only (PYTHONPATH=bench/arena_hook, with
ARENA_PINS_OUT set); it does nothing otherwise and is no part of the proxy.

SIGUSR1 (at idle): a full collection, pymalloc's statistics written out, then the ids of every
object alive (the collector's objects, frozen ones too, and their untracked referents: str,
bytes, int, float, tuple...) kept in a sorted array. SIGUSR2 (after the flood and its settle
time): pymalloc's statistics again (first, before this hook allocates anything), then every
small object alive now whose id was not alive at idle, placed in its pymalloc pool and arena by
reading the pool header at `address & ~(POOL_SIZE - 1)` (Objects/obmalloc.c: 16 KiB pools in
1 MiB arenas in 3.11; `struct pool_header` has the used-block count at offset 0 and the arena
index at 32), per arena with reprs and referrers. Written to ARENA_PINS_OUT/report.txt; then the
process goes on.

With ARENA_PINS_MODE=trace, SIGUSR1 starts `tracemalloc` instead and the report also groups
every small block made since (objects or not: dict key tables, list buffers) by the traceback
that allocated it; tracemalloc slows the proxy ~10x, so the flood is mostly shed (or, with
shedding off, still being worked off after the settle time) and the arenas are not those of a
real run.
"""

from __future__ import annotations

import bisect
import collections
import ctypes
import gc
import os
import signal
import struct
import sys
import tracemalloc
from array import array
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

# bench/ is a package of the repository two levels up; its mallocstats module imports only
# the standard library, so the proxy's modules are not loaded ahead of the measurement.
sys.path.append(str(Path(__file__).resolve().parents[2]))
from bench.mallocstats import mallocstats

POOL_SIZE = 16 * 1024
SMALL = 512  # pymalloc's largest block; bigger requests go to malloc
FRAMES = 12
REFERRERS_PER_ARENA = 4
OUT = os.environ.get("ARENA_PINS_OUT", "")


def arena_lines(text: str) -> list[str]:
    wanted = ("# arenas allocated current", "# arenas highwater", "# bytes in allocated blocks",
              "# bytes in available blocks", "# arenas allocated total", "# arenas reclaimed")
    return [line for line in text.splitlines() if line.startswith(wanted)]


def mapped_ranges() -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = line.split()[0].split("-")
        ranges.append((int(start, 16), int(end, 16)))
    return sorted(ranges)


def pool_of(address: int, ranges: list[tuple[int, int]]) -> tuple[int, int, int, int] | None:
    """(pool base, blocks used in it, arena index, size class) when `address` lies in what looks
    like a pymalloc pool, else None."""
    base = address & ~(POOL_SIZE - 1)
    at = bisect.bisect_right(ranges, (base, 1 << 64)) - 1
    if at < 0 or not ranges[at][0] <= base < address < ranges[at][1]:
        return None
    used = ctypes.c_uint.from_address(base).value
    arena = ctypes.c_uint.from_address(base + 32).value
    size_class = ctypes.c_uint.from_address(base + 36).value
    if size_class >= SMALL // 16 or not 0 < used <= POOL_SIZE // 16:
        return None
    return base, used, arena, size_class


def site(trace: tracemalloc.Traceback, frames: int = 4) -> str:
    """The most recent `frames` frames (a Traceback runs from the oldest to the most recent)."""
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in list(trace)[::-1][:frames])


def all_objects() -> list[Any]:
    """The collector's objects and, transitively, their untracked referents."""
    found: dict[int, Any] = {}
    todo = list(gc.get_objects())
    for obj in todo:
        found[id(obj)] = obj
    for _ in range(100):  # bounded: untracked containers nest a few levels at most
        fresh = []
        for chunk in range(0, len(todo), 10_000):
            for referent in gc.get_referents(*todo[chunk:chunk + 10_000]):
                if id(referent) not in found and not gc.is_tracked(referent):
                    found[id(referent)] = referent
                    fresh.append(referent)
        if not fresh:
            break
        todo = fresh
    return list(found.values())


def short_repr(obj: Any, width: int = 110) -> str:
    try:
        text = repr(obj)
    except Exception as error:  # a repr may fail on a half-made object
        text = f"<repr failed: {error!r}>"
    return text if len(text) <= width else text[:width] + "..."


def describe_referrers(obj: Any, exclude: set[int]) -> str:
    """Who holds `obj` (loops, not comprehensions: a comprehension's cell would hold it too)."""
    parts = []
    for referrer in gc.get_referrers(obj)[:6]:
        if id(referrer) in exclude or (type(referrer) is tuple and len(referrer) == 3
                                       and referrer[0] is obj):  # this hook's own records
            continue
        kind = type(referrer).__qualname__
        if isinstance(referrer, dict):
            key: Any = "?"
            for name, value in referrer.items():
                if value is obj or name is obj:
                    key = name
                    break
            owners = []
            for owner in gc.get_referrers(referrer)[:3]:
                if id(owner) not in exclude:
                    owners.append(type(owner).__qualname__)
            kind += f"[{short_repr(key, 30)}] of {owners}"
        elif isinstance(referrer, list | tuple) and len(referrer) < 8:
            kind += short_repr(referrer, 60)
        parts.append(kind)
    return ", ".join(parts) or "-"


class Allocator(ctypes.Structure):
    """PyMemAllocatorEx (Include/cpython/pymem.h)."""

    _fields_ = [("ctx", ctypes.c_void_p), ("malloc", ctypes.c_void_p),
                ("calloc", ctypes.c_void_p), ("realloc", ctypes.c_void_p),
                ("free", ctypes.c_void_p)]


DOMAIN_OBJ = 2  # PYMEM_DOMAIN_OBJ
PYMALLOC = Allocator()


def pymalloc_stats() -> str:
    """sys._debugmallocstats prints nothing while tracemalloc's hooks are the object allocator:
    put pymalloc's own back for the call (a block it allocates meanwhile is simply untraced)."""
    hooks = Allocator()
    ctypes.pythonapi.PyMem_GetAllocator(DOMAIN_OBJ, ctypes.byref(hooks))
    ctypes.pythonapi.PyMem_SetAllocator(DOMAIN_OBJ, ctypes.byref(PYMALLOC))
    try:
        return mallocstats()
    finally:
        ctypes.pythonapi.PyMem_SetAllocator(DOMAIN_OBJ, ctypes.byref(hooks))


TRACE = os.environ.get("ARENA_PINS_MODE", "ids") == "trace"
IDLE_IDS = array("Q")  # ids mode: the objects alive at idle, sorted


def mark(_signum: int, _frame: FrameType | None) -> None:
    gc.collect()
    Path(OUT, "idle_mallocstats.txt").write_text(mallocstats())
    if TRACE:
        ctypes.pythonapi.PyMem_GetAllocator(DOMAIN_OBJ, ctypes.byref(PYMALLOC))
        tracemalloc.start(FRAMES)
        return
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    IDLE_IDS.extend(sorted(id(obj) for obj in all_objects()))
    if frozen:
        gc.freeze()  # as it was (the proxy froze its start-up objects)


def is_new(obj: Any) -> bool:
    at = bisect.bisect_left(IDLE_IDS, id(obj))
    return at == len(IDLE_IDS) or IDLE_IDS[at] != id(obj)


def dump(_signum: int, _frame: FrameType | None) -> None:
    stats = pymalloc_stats() if TRACE else mallocstats()
    lines = ["== pymalloc at idle", *arena_lines(Path(OUT, "idle_mallocstats.txt").read_text()),
             "== pymalloc now", *arena_lines(stats)]
    if TRACE:
        lines += traced_sites(tracemalloc.take_snapshot())
    else:
        blocks = capture_blocks()  # before this hook's own objects take blocks
    lines += pinning_objects()
    if not TRACE:
        lines += arena_blocks(blocks)
    tracemalloc.stop()
    Path(OUT, "mallocstats.txt").write_text(stats)
    Path(OUT, "report.txt").write_text("\n".join(lines) + "\n")


def traced_sites(snapshot: tracemalloc.Snapshot) -> list[str]:
    """Small blocks alive now that were allocated after the mark, by allocation site."""
    by_site: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    for trace in snapshot.traces:
        if trace.size <= SMALL:
            key = site(trace.traceback, 6)
            by_site[key] += 1
            sizes[key] += trace.size
    lines = [f"== small blocks made since idle and alive: {sum(by_site.values())} "
             f"({sum(sizes.values()) / 1024:.0f} KB), by site (most recent frame first)"]
    lines += [f"{count:7d} {sizes[key]:9d} B  {key}" for key, count in by_site.most_common(60)]
    return lines


def pinning_objects() -> list[str]:
    gc.unfreeze()  # frozen objects are invisible to gc.get_objects
    objects = all_objects()
    ranges = mapped_ranges()
    per_arena: dict[int, list[tuple[Any, str, int]]] = collections.defaultdict(list)
    pool_used: dict[int, int] = {}
    pool_arena: dict[int, int] = {}
    kinds: collections.Counter[str] = collections.Counter()
    for obj in objects:
        trace = tracemalloc.get_object_traceback(obj) if TRACE else None
        if (trace is None if TRACE else not is_new(obj)) or sys.getsizeof(obj) > SMALL:
            continue
        pool = pool_of(id(obj), ranges)
        if pool is None:
            continue
        base, used, arena, _ = pool
        pool_used[base], pool_arena[base] = used, arena
        where = site(trace, 3) if trace is not None else "-"
        per_arena[arena].append((obj, where, base))
        kinds[f"{type(obj).__qualname__}  {where}"] += 1
    new_per_pool = collections.Counter(base for found in per_arena.values()
                                       for _, _, base in found)
    lines = [f"== new small objects alive: {sum(kinds.values())} in {len(per_arena)} arenas, "
             f"{len(new_per_pool)} pools; by type and site"]
    lines += [f"{count:7d}  {key}" for key, count in kinds.most_common(60)]
    lines.append("== per arena: new objects found / blocks used in their pools (equal: the "
                 "pools hold nothing older)")
    exclude = {id(objects), id(per_arena), id(sys._getframe())}
    for arena, found in sorted(per_arena.items(), key=lambda item: len(item[1])):
        pools = {base for _, _, base in found}
        used = sum(pool_used[base] for base in pools)
        types = collections.Counter(type(obj).__qualname__ for obj, _, _ in found)
        lines.append(f"arena {arena}: {len(found)} new / {used} used in {len(pools)} pools: "
                     f"{dict(types.most_common(8))}")
        for obj, where, _ in found[:REFERRERS_PER_ARENA]:
            lines.append(f"    {type(obj).__qualname__} {short_repr(obj)}  made {where}")
            lines.append(f"        referred by {describe_referrers(obj, exclude)}")
    return lines


if OUT:
    signal.signal(signal.SIGUSR1, mark)
    signal.signal(signal.SIGUSR2, dump)


POOL_OVERHEAD = 48  # sizeof(struct pool_header), rounded up to 16
POOL_HEADER = struct.Struct("<I4xQQQIIII")  # count, freeblock, next, prev, arena, szidx, ...


def readable_anonymous() -> list[tuple[int, int]]:
    """Readable anonymous mappings: where pymalloc mmaps its arenas."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[1].startswith("r"):
            start, end = fields[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def used_pools() -> Iterator[tuple[int, int, int, int, int]]:
    """(base, arena index, block size, blocks carved, first free block) of every pool in use,
    found by its header's invariants (Objects/obmalloc.c: `maxnextoffset = POOL_SIZE - size`).
    One at a time: a list of them would take blocks of the very pools being read."""
    for start, end in readable_anonymous():
        base = (start + POOL_SIZE - 1) & ~(POOL_SIZE - 1)
        while base + POOL_SIZE <= end:
            count, freeblock, _, _, arena, size_class, next_offset, max_next = \
                POOL_HEADER.unpack(ctypes.string_at(base, POOL_HEADER.size))
            size = (size_class + 1) * 16
            if (size_class < SMALL // 16 and max_next == POOL_SIZE - size and count > 0
                    and POOL_OVERHEAD <= next_offset <= POOL_SIZE
                    and (next_offset - POOL_OVERHEAD) % size == 0 and arena < 100_000):
                yield base, arena, size, (next_offset - POOL_OVERHEAD) // size, freeblock
            base += POOL_SIZE


def allocated_blocks(base: int, size: int, carved: int, freeblock: int) -> Iterator[int]:
    free = array("Q")  # not a set of ints: those would be blocks too
    for _ in range(POOL_SIZE // 16):  # bounded: a free list is at most one pool of blocks
        if not base <= freeblock < base + POOL_SIZE:
            break
        free.append(freeblock)
        freeblock = ctypes.c_size_t.from_address(freeblock).value
    free = array("Q", sorted(free))
    for n in range(carved):
        block = base + POOL_OVERHEAD + n * size
        at = bisect.bisect_left(free, block)
        if at == len(free) or free[at] != block:
            yield block


def buffer_owners(objects: list[Any]) -> dict[int, str]:
    """Blocks that are no object but an object's buffer: dict key tables and value arrays, list
    item arrays, set tables, the values of instances with a managed dict (CPython 3.11
    layouts: PyDictObject.ma_keys at 32 and ma_values at 40, PyListObject.ob_item at 24,
    PySetObject.table at 40, an instance's values pointer 32 bytes before it)."""
    owners: dict[int, str] = {}
    word = ctypes.c_size_t
    for obj in objects:
        kind, address = type(obj), id(obj)
        if kind is dict or isinstance(obj, dict):
            owners[word.from_address(address + 32).value] = "keys of a dict"
            owners[word.from_address(address + 40).value] = "values of a dict"
        elif isinstance(obj, list):
            owners[word.from_address(address + 24).value] = f"items of a list of {len(obj)}"
        elif isinstance(obj, set | frozenset):
            owners[word.from_address(address + 40).value] = "table of a set"
        if kind.__flags__ & (1 << 4):  # Py_TPFLAGS_MANAGED_DICT
            owners[word.from_address(address - 32).value] = \
                f"attribute values of a {kind.__qualname__}"
    return owners


def owner_of_buffer(block: int, objects: list[Any], owners: dict[int, str]) -> str:
    what = owners.get(block, "")
    if not what:
        return "unknown block " + ctypes.string_at(block, 16).hex()
    for obj in objects:  # whose: the first object pointing at it (slow, for a few blocks)
        if isinstance(obj, dict | list | set | frozenset) or type(obj).__flags__ & (1 << 4):
            for offset in (24, 32, 40, -32):
                if (isinstance(obj, dict | list | set | frozenset) or offset == -32) and \
                        ctypes.c_size_t.from_address(id(obj) + offset).value == block:
                    holders = [type(h).__qualname__ for h in gc.get_referrers(obj)[:3]]
                    return f"{what} {short_repr(obj, 70)} held by {holders}"
    return what


def idle_arena_total() -> int:
    for line in Path(OUT, "idle_mallocstats.txt").read_text().splitlines():
        if line.startswith("# arenas allocated total"):
            return int(line.split("=")[1].replace(",", ""))
    return 0


def capture_blocks() -> tuple[array[int], array[int], array[int]]:
    """Address, size and arena of every block in use in the arenas made since idle (index >=
    the idle total), in arrays: nothing of this hook's own sits in those pools yet."""
    idle_total = idle_arena_total()
    addresses, sizes, arenas = array("Q"), array("I"), array("I")
    for base, arena, size, carved, freeblock in used_pools():
        if arena >= idle_total:
            for block in allocated_blocks(base, size, carved, freeblock):
                addresses.append(block)
                sizes.append(size)
                arenas.append(arena)
    return addresses, sizes, arenas


def unreachable(block: int, kind: str) -> str:
    """An object no reachable one holds: with a reference count of 0, a free-list member
    (tuples, lists, floats, dicts... are kept for re-use, and their blocks stay in use)."""
    for offset in (0, 16):
        refcount = ctypes.c_ssize_t.from_address(block + offset).value
        kind_at = ctypes.c_size_t.from_address(block + offset + 8).value
        if kind_at and offset == 0 and kind == "int" and refcount > 0:
            value = ctypes.cast(block, ctypes.py_object).value
            return f"unreachable int {value!r} (refcount {refcount})"
    refcount = ctypes.c_ssize_t.from_address(block).value
    refcount_gc = ctypes.c_ssize_t.from_address(block + 16).value
    return f"unreachable {kind} (refcount {refcount} / {refcount_gc} past a GC header)"


def arena_blocks(blocks: tuple[array[int], array[int], array[int]]) -> list[str]:
    """What each block captured is: an object (reachable from the collector's), a buffer of
    one (dict keys, list items...), or an object nothing reachable holds (C-held)."""
    objects = all_objects()
    by_address: dict[int, Any] = {}
    types: dict[int, str] = {}
    for obj in objects:
        by_address[id(obj)] = obj
        types[id(type(obj))] = type(obj).__qualname__
    owners = buffer_owners(objects)
    per_arena: dict[int, list[str]] = collections.defaultdict(list)
    for block, size, arena in zip(*blocks, strict=True):
        found = next((by_address[a] for a in (block + 16, block + 32, block)
                      if a in by_address), None)
        if found is not None:
            text = f"{type(found).__qualname__} {short_repr(found, 80)}"
        elif block in owners:
            text = owner_of_buffer(block, objects, owners)
        else:
            kind = types.get(ctypes.c_size_t.from_address(block + 8).value) or \
                types.get(ctypes.c_size_t.from_address(block + 24).value)
            text = (unreachable(block, kind) if kind else
                    "unknown " + ctypes.string_at(block, 16).hex())
        per_arena[arena].append(f"{size:3d} B {text}")
    lines = [f"== blocks in use in the arenas made since idle: {len(blocks[0])} in "
             f"{len(per_arena)} arenas"]
    for arena, texts in sorted(per_arena.items()):
        lines.append(f"arena {arena}: {len(texts)} blocks")
        lines += [f"    {text}" for text in texts[:30]]
    return lines
