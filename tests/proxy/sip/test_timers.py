"""TimerQueue: deadlines keyed by (owner, name), a timing wheel of 1/64 s slots; re-arming
replaces, cancelling removes at once, deadlines stay exact. Owners are tuples (transaction
keys); what the queue holds is tuples of atoms the collector untracks."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sip import timers
from proxy.sip.timers import TimerQueue


def test_empty_queue_has_no_deadline() -> None:
    queue = TimerQueue()
    assert queue.next_deadline() is None
    assert queue.pop_due(1e9) == []
    assert len(queue) == 0


def test_pop_due_returns_what_is_due_in_deadline_order() -> None:
    queue = TimerQueue()
    queue.arm(("t1",), "B", 32.0)
    queue.arm(("t1",), "A", 0.5)
    queue.arm(("t2",), "E", 0.5)
    queue.arm(("t3",), "F", 10.0)
    assert queue.next_deadline() == 0.5
    assert queue.pop_due(0.49) == []
    assert queue.pop_due(10.0) == [(("t1",), "A"), (("t2",), "E"), (("t3",), "F")]
    assert queue.next_deadline() == 32.0
    assert len(queue) == 1


def test_a_deadline_equal_to_now_is_due() -> None:
    queue = TimerQueue()
    queue.arm(("t",), "A", 1.0)
    assert queue.pop_due(1.0) == [(("t",), "A")]


def test_same_deadline_fires_in_arming_order() -> None:
    queue = TimerQueue()
    for name in ("X", "Y", "Z"):
        queue.arm(("t",), name, 5.0)
    assert queue.pop_due(5.0) == [(("t",), "X"), (("t",), "Y"), (("t",), "Z")]


def test_rearming_replaces_the_previous_deadline() -> None:
    queue = TimerQueue()
    queue.arm(("t",), "A", 1.0)
    queue.arm(("t",), "A", 3.0)
    assert queue.next_deadline() == 3.0
    assert queue.pop_due(2.0) == []
    assert queue.pop_due(3.0) == [(("t",), "A")]
    assert queue.pop_due(100.0) == []


def test_rearming_earlier_replaces_too() -> None:
    queue = TimerQueue()
    queue.arm(("t",), "A", 3.0)
    queue.arm(("t",), "A", 1.0)
    assert queue.pop_due(10.0) == [(("t",), "A")]


def test_cancel_and_cancel_all() -> None:
    queue = TimerQueue()
    queue.arm(("t",), "A", 1.0)
    queue.arm(("t",), "B", 2.0)
    queue.arm(("t",), "C", 3.0)
    queue.arm(("u",), "A", 4.0)
    queue.cancel(("t",), "A")
    assert not queue.is_armed(("t",), "A")
    assert queue.next_deadline() == 2.0
    queue.cancel_all(("t",), ("B", "C", "D"))
    assert queue.next_deadline() == 4.0
    assert queue.pop_due(10.0) == [(("u",), "A")]
    queue.cancel(("nobody",), "A")  # cancelling what is not armed is harmless
    assert len(queue) == 0


def test_is_armed_and_len_follow_the_live_timers() -> None:
    queue = TimerQueue()
    queue.arm(("branch", "INVITE"), "A", 0.5)
    queue.arm(("branch", "INVITE"), "A", 1.0)
    assert len(queue) == 1
    assert queue.is_armed(("branch", "INVITE"), "A")
    queue.pop_due(1.0)
    assert not queue.is_armed(("branch", "INVITE"), "A")
    assert len(queue) == 0


def test_a_timer_may_be_rearmed_from_what_fired() -> None:
    queue = TimerQueue()
    queue.arm(("t",), "G", 0.5)
    fired = []
    now = 0.0
    interval = timers.T1
    while (deadline := queue.next_deadline()) is not None and deadline < 10.0:
        now = deadline
        for owner, name in queue.pop_due(now):
            fired.append(now)
            interval = min(interval * 2, timers.T2)
            queue.arm(owner, name, now + interval)
    assert fired == [0.5, 1.5, 3.5, 7.5]


def test_many_stale_entries_are_skipped() -> None:
    queue = TimerQueue()
    for i in range(1000):
        queue.arm(("t",), "A", float(i))
    assert queue.next_deadline() == 999.0
    assert queue.pop_due(1000.0) == [(("t",), "A")]
    assert queue.next_deadline() is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("T1", 0.5), ("T2", 4.0), ("T4", 5.0), ("TIMER_B", 32.0), ("TIMER_F", 32.0),
        ("TIMER_H", 32.0), ("TIMER_J", 32.0), ("TIMER_L", 32.0), ("TIMER_D", 32.0),
    ],
)
def test_rfc_3261_timer_values(name: str, expected: float) -> None:
    assert getattr(timers, name) == expected


def test_timer_c_is_longer_than_three_minutes() -> None:
    assert timers.TIMER_C >= 180.0  # RFC 3261 16.6 step 11


def test_cancelled_timers_do_not_grow_the_queue() -> None:
    """100k arm/cancel pairs with a few live timers: nothing stale is kept, and the slots held
    are bounded by the time the deadlines span, not by how many timers were armed."""
    queue = TimerQueue()
    for i in range(10):
        queue.arm(("live", i), "B", 1000.0 + i)
    largest = 0
    for i in range(100_000):
        queue.arm(("t", i), "A", float(i % 50))
        queue.cancel(("t", i), "A")
        largest = max(largest, queue.slot_count)
    assert len(queue) == 10
    assert largest <= 10 + 50
    assert queue.pop_due(2000.0) == [(("live", i), "B") for i in range(10)]
    assert queue.slot_count == 0


def test_rearming_the_same_timer_does_not_grow_the_queue() -> None:
    queue = TimerQueue()
    for i in range(100_000):
        queue.arm(("t",), "A", float(i))
    assert sum(len(bucket) for bucket in queue._wheel) == 1
    assert queue.pop_due(1e9) == [(("t",), "A")]
    assert queue.slot_count == 0


def test_deadlines_within_one_slot_stay_exact() -> None:
    """Three deadlines inside one 1/64 s slot: each fires at its own time, not the slot's."""
    queue = TimerQueue()
    queue.arm(("a",), "A", 1.001)
    queue.arm(("b",), "A", 1.005)
    queue.arm(("c",), "A", 1.003)
    assert queue.next_deadline() == 1.001
    assert queue.pop_due(1.0009) == []
    assert queue.pop_due(1.001) == [(("a",), "A")]
    assert queue.next_deadline() == 1.003
    assert queue.pop_due(1.004) == [(("c",), "A")]
    assert queue.next_deadline() == 1.005
    assert queue.pop_due(1.005) == [(("b",), "A")]
    assert queue.next_deadline() is None


def test_a_cancel_leaves_at_most_one_early_wakeup() -> None:
    """The earliest deadline a slot keeps is not recomputed on cancel: the next deadline may be
    the cancelled one, once; the wakeup there fires nothing and finds the true one."""
    queue = TimerQueue()
    queue.arm(("a",), "A", 2.001)
    queue.arm(("b",), "A", 2.009)
    queue.cancel(("a",), "A")
    early = queue.next_deadline()
    assert early in (2.001, 2.009)
    assert queue.pop_due(2.001) == []
    assert queue.next_deadline() == 2.009
    assert queue.pop_due(2.009) == [(("b",), "A")]


def test_rearming_moves_a_timer_to_its_new_slot() -> None:
    queue = TimerQueue()
    queue.arm(("t",), "A", 10.0)
    queue.arm(("t",), "A", 0.25)
    assert queue.pop_due(0.25) == [(("t",), "A")]
    assert queue.pop_due(100.0) == []
    assert queue.next_deadline() is None


def test_negative_and_fractional_times_fall_in_the_right_slot() -> None:
    """math.floor, not int(): a fake clock may start below zero."""
    queue = TimerQueue()
    queue.arm(("t",), "A", -0.004)
    queue.arm(("u",), "A", 0.004)
    assert queue.pop_due(-0.005) == []
    assert queue.pop_due(-0.004) == [(("t",), "A")]
    assert queue.pop_due(0.003) == []
    assert queue.pop_due(0.004) == [(("u",), "A")]


def test_slots_a_turn_of_the_wheel_apart_share_a_bucket_and_fire_apart() -> None:
    """Timer C (180 s) lies beyond one turn (64 s): in the bucket of a slot fired earlier, it
    is left there until its own slot comes."""
    turn = timers.WHEEL_SIZE / timers.SLOTS_PER_SECOND
    queue = TimerQueue()
    queue.arm(("c",), "C", 1.0 + 2 * turn)
    queue.arm(("b",), "B", 1.0 + turn)
    queue.arm(("a",), "A", 1.0)
    assert queue.pop_due(1.0) == [(("a",), "A")]
    assert queue.next_deadline() == 1.0 + turn
    assert queue.pop_due(turn) == []
    assert queue.pop_due(1.0 + turn) == [(("b",), "B")]
    assert queue.pop_due(2.0 + turn) == []
    assert queue.pop_due(1.0 + 2 * turn) == [(("c",), "C")]
    assert len(queue) == 0 and queue.next_deadline() is None


@pytest.mark.parametrize("deadline", [math.inf, -math.inf, math.nan])
def test_a_non_finite_deadline_is_refused_and_changes_nothing(deadline: float) -> None:
    queue = TimerQueue()
    queue.arm(("t",), "A", 1.0)
    with pytest.raises(ValueError):
        queue.arm(("t",), "A", deadline)
    assert queue.is_armed(("t",), "A") and queue.next_deadline() == 1.0
    queue.cancel(("t",), "A")
    assert len(queue) == 0 and queue.next_deadline() is None


def test_pop_due_at_infinity_fires_everything_and_at_nan_nothing() -> None:
    queue = TimerQueue()
    assert queue.pop_due(math.inf) == []
    queue.arm(("a",), "A", 1.0)
    queue.arm(("c",), "C", 1e6)
    assert queue.pop_due(math.nan) == []
    assert queue.pop_due(math.inf) == [(("a",), "A"), (("c",), "C")]
    assert len(queue) == 0


def test_many_deadlines_in_one_slot_fire_in_order_as_time_passes() -> None:
    """Woken at each deadline of a crowded slot (the glue wakes at next_deadline): each wakeup
    fires exactly what is due."""
    queue = TimerQueue()
    deadlines = [3.0 + i / 10_000 for i in range(100)]  # all in the slot of 3.0 s
    for i, deadline in enumerate(reversed(deadlines)):
        queue.arm((i,), "K", deadline)
    fired: list[float] = []
    while (due := queue.next_deadline()) is not None:
        assert queue.pop_due(due - 1e-9) == []
        fired += [due] * len(queue.pop_due(due))
    assert fired == deadlines


def test_a_bucket_gives_back_its_table_once_its_slots_are_gone() -> None:
    """A dict keeps its hash table when emptied; the wheel's buckets must not, or every
    bucket would keep the largest table it ever needed (~9 MB over 4,096 at 1,000 calls/s)."""
    queue = TimerQueue()
    empty = sys.getsizeof(queue._wheel[64])
    for i in range(200):
        queue.arm((i,), "J", 1.0 + i / 1e6)  # all in slot 64
    for i in range(100):
        queue.cancel((i,), "J")  # emptied partly by cancels, then fired
    bucket = queue._wheel[64]
    assert sys.getsizeof(bucket) > empty
    assert len(queue.pop_due(2.0)) == 100
    assert sys.getsizeof(bucket) == empty
    for i in range(200, 300):
        queue.arm((i,), "J", 3.0)  # slot 192: cancelled, then the slot is reached
    for i in range(200, 300):
        queue.cancel((i,), "J")
    assert sys.getsizeof(queue._wheel[192]) > empty
    assert queue.next_deadline() is None
    assert sys.getsizeof(queue._wheel[192]) == empty


def test_shrink_drops_emptied_slots_and_keeps_the_live_timers() -> None:
    queue = TimerQueue()
    for i in range(1000):
        queue.arm(("gone", i), "B", 1.0 + i / 100)
    for i in range(1000):
        queue.cancel(("gone", i), "B")
    queue.arm(("kept",), "B", 5.0)
    queue.arm(("later",), "B", 7.0)
    assert queue.slot_count > 500
    queue.shrink()
    assert queue.slot_count == 2
    assert queue.next_deadline() == 5.0
    assert queue.pop_due(10.0) == [(("kept",), "B"), (("later",), "B")]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["arm", "cancel", "pop"]),
            st.integers(0, 5),
            st.sampled_from(["A", "B"]),
            st.floats(0.0, 3.0, allow_nan=False),
        ),
        max_size=80,
    ),
    st.sampled_from([1.0, 100.0]),
)
def test_fires_as_a_plain_sorted_model_does(
    ops: list[tuple[str, int, str, float]], scale: float
) -> None:
    """Against the obvious model (a dict of deadlines, fired sorted by deadline then arming
    order): the same timers fire, in the same order, at every step, and next_deadline is never
    later than the model's earliest (earlier only after a cancel: a slot keeps the earliest
    deadline it was given) and None when nothing is armed."""
    queue = TimerQueue()
    model: dict[tuple[tuple[int], str], tuple[float, int]] = {}
    now, sequence = 0.0, 0
    for op, owner_id, name, value in ops:
        owner = (owner_id,)
        if op == "arm":
            deadline = now + value * scale  # x100: up to 300 s, several turns of the wheel
            queue.arm(owner, name, deadline)
            model[(owner, name)] = (deadline, sequence)
            sequence += 1
        elif op == "cancel":
            queue.cancel(owner, name)
            model.pop((owner, name), None)
        else:
            now += value * scale
            expected = sorted(
                (entry for entry in model.items() if entry[1][0] <= now), key=lambda e: e[1]
            )
            for key, _ in expected:
                del model[key]
            assert queue.pop_due(now) == [key for key, _ in expected]
        assert len(queue) == len(model)
        earliest = min((deadline for deadline, _ in model.values()), default=None)
        found = queue.next_deadline()
        if earliest is None:
            assert found is None
        else:
            assert found is not None and found <= earliest


def test_timer_names_are_the_rfc_letters() -> None:
    assert [t.value for t in timers.Timer] == [*"ABCDEFGHIJKL", "no-answer"]
