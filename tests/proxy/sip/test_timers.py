"""TimerQueue: deadlines keyed by (owner, name); re-arming replaces, cancelling is lazy. Owners
are tuples (transaction keys); what the queue holds is tuples of atoms the collector untracks."""

from __future__ import annotations

import pytest

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
    """100k arm/cancel pairs with a few live timers: the heap stays near the live count."""
    queue = TimerQueue()
    for i in range(10):
        queue.arm(("live", i), "B", 1000.0 + i)
    largest = 0
    for i in range(100_000):
        queue.arm(("t", i), "A", float(i % 50))
        queue.cancel(("t", i), "A")
        largest = max(largest, queue.heap_size)
    assert len(queue) == 10
    assert largest <= 2 * 11 + 64 + 1
    assert queue.pop_due(2000.0) == [(("live", i), "B") for i in range(10)]


def test_rearming_the_same_timer_does_not_grow_the_queue() -> None:
    queue = TimerQueue()
    for i in range(100_000):
        queue.arm(("t",), "A", float(i))
    assert queue.heap_size <= 2 * 1 + 64 + 1
    assert queue.pop_due(1e9) == [(("t",), "A")]


def test_timer_names_are_the_rfc_letters() -> None:
    assert [t.value for t in timers.Timer] == [*"ABCDEFGHIJKL", "no-answer"]
