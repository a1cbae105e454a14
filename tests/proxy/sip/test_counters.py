"""The core's event counts (proxy/sip/counters.py): Counter's behaviour, values kept unboxed."""

from __future__ import annotations

import gc
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.sip.counters import RESERVED, Counts
from tests.proxy.sip.support import PBX_SOURCE, Clocked, FixedPolicy, invite, make_core

NAMES = st.sampled_from(["received", "forwarded", "timeouts", "refused_403", "shed"])


@given(st.lists(st.tuples(NAMES, st.integers(min_value=0, max_value=2**40)), max_size=40))
def test_counts_read_and_write_like_a_counter(steps: list[tuple[str, int]]) -> None:
    counts: Counts[str] = Counts()
    expected: Counter[str] = Counter()
    for name, step in steps:
        counts[name] += step
        expected[name] += step
    assert dict(counts) == dict(expected)
    assert list(counts) == list(expected)  # first-count order, like a dict
    assert len(counts) == len(expected)
    assert sorted(counts.items()) == sorted(expected.items())
    assert counts.keys() == list(expected.keys())
    assert counts.values() == list(expected.values())
    assert counts == dict(expected)


@given(st.lists(st.tuples(NAMES, st.integers(min_value=0, max_value=2**40)), max_size=40))
def test_add_is_an_increment(steps: list[tuple[str, int]]) -> None:
    added: Counts[str] = Counts()
    incremented: Counts[str] = Counts()
    for name, step in steps:
        added.add(name, step)
        incremented[name] += step
    assert added.items() == incremented.items()  # the same counts, in the same order
    ones: Counts[str] = Counts()
    for name, _ in steps:
        ones.add(name)
    assert dict(ones) == dict(Counter(name for name, _ in steps))


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda c: c["never"], 0),
        (lambda c: c.get("never"), 0),
        (lambda c: c.get("never", 7), 7),
        (lambda c: c.get("seen", 7), 3),
        (lambda c: "never" in c, False),
        (lambda c: "seen" in c, True),
        (lambda c: len(c), 1),
    ],
)
def test_a_missing_name_reads_zero_and_is_not_added(
    read: object, expected: object
) -> None:
    counts: Counts[str] = Counts()
    counts["seen"] += 3
    assert callable(read)
    assert read(counts) == expected
    assert dict(counts) == {"seen": 3}


def test_more_names_than_the_reserved_slots() -> None:
    counts: Counts[str] = Counts()
    names = [f"refused_{n}" for n in range(3 * RESERVED + 5)]
    for step, name in enumerate(names):
        counts[name] += step
    counts[names[0]] += 7
    assert dict(counts) == {name: step for step, name in enumerate(names)} | {names[0]: 7}
    assert counts.values() == [7, *range(1, len(names))]


def test_tuple_keys_as_the_metrics_use_them() -> None:
    counts: Counts[tuple[str, str]] = Counts()
    counts[("408", "timer B")] += 1
    counts[("408", "timer B")] += 1
    assert counts.items() == [(("408", "timer B"), 2)]


def _ints_reachable(root: object, depth: int = 4) -> list[int]:
    """Every int object `root` refers to, through containers, `depth` levels down."""
    found: list[int] = []
    level = [root]
    for _ in range(depth):
        nxt: list[object] = []
        for obj in level:
            for ref in gc.get_referents(obj):
                if type(ref) is int:
                    found.append(ref)
                elif not isinstance(ref, (str, bytes, type)):
                    nxt.append(ref)
        level = nxt
    return found


def test_counts_keep_no_int_object_per_value() -> None:
    """Issue 7: a count bumped all through a flood must not leave its last value as a heap
    object (it would pin a pymalloc arena of the flood's); the values live in an array."""
    counts: Counts[str] = Counts()
    for _ in range(1000):
        counts["timeouts"] += 1
    assert counts["timeouts"] == 1000
    assert 1000 not in _ints_reachable(counts)
    plain: Counter[str] = Counter(timeouts=1000)  # what the check sees in a Counter
    assert 1000 in _ints_reachable(plain)


def test_the_core_counts_without_keeping_the_values() -> None:
    clocked = Clocked(make_core(FixedPolicy()))
    for n in range(300):
        clocked.receive(invite(branch=f"z9hG4bK-count-{n}", call_id=f"count-{n}@pbx"),
                        PBX_SOURCE)
    counters = clocked.core.counters
    assert counters["received"] == 300
    assert counters["forwarded"] == 300
    assert isinstance(counters, Counts)
    assert 300 not in _ints_reachable(counters)
