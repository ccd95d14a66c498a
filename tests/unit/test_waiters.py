"""WaitRoom: clients waiting for a task are answered once, when it finishes or at their deadline."""

from __future__ import annotations

from qrt.coordinator.waiters import Waiter, WaitRoom


def rids(waiters: list[Waiter]) -> list[int]:
    return [w.rid for w in waiters]


def expired_rids(room: WaitRoom, now: float) -> list[tuple[str, int]]:
    return [(task_id, w.rid) for task_id, w in room.expired(now)]


def test_finished_answers_each_waiter_of_the_task_once() -> None:
    room = WaitRoom()
    room.add("a", b"client-1", 1, deadline=10.0)
    room.add("a", b"client-2", 7, deadline=20.0)
    room.add("b", b"client-1", 2, deadline=10.0)
    answered = room.finished("a")
    assert [(w.identity, w.rid) for w in answered] == [(b"client-1", 1), (b"client-2", 7)]
    assert room.finished("a") == []
    assert len(room) == 1  # task b's waiter is still there
    assert rids(room.finished("b")) == [2]
    assert len(room) == 0


def test_a_task_nobody_waits_for_finishes_without_answering_anyone() -> None:
    room = WaitRoom()
    room.add("a", b"client", 1, deadline=10.0)
    assert room.finished("other") == []
    assert len(room) == 1


def test_waits_expire_at_their_deadline_earliest_first() -> None:
    room = WaitRoom()
    room.add("late", b"client-1", 1, deadline=3.0)
    room.add("early", b"client-2", 2, deadline=1.0)
    room.add("middle", b"client-3", 3, deadline=2.0)
    assert expired_rids(room, 0.5) == []
    assert expired_rids(room, 2.0) == [("early", 2), ("middle", 3)]  # a deadline equal to now is due
    assert len(room) == 1
    assert expired_rids(room, 10.0) == [("late", 1)]
    assert expired_rids(room, 10.0) == []
    assert len(room) == 0


def test_waits_with_the_same_deadline_expire_in_the_order_they_came() -> None:
    room = WaitRoom()
    for rid, task_id in enumerate(["b", "a", "b", "a", "b"]):
        room.add(task_id, b"client", rid, deadline=1.0)
    assert expired_rids(room, 1.0) == [("b", 0), ("a", 1), ("b", 2), ("a", 3), ("b", 4)]


def test_an_expired_wait_leaves_the_other_waits_on_its_task() -> None:
    room = WaitRoom()
    room.add("a", b"client-1", 1, deadline=1.0)
    room.add("a", b"client-2", 2, deadline=5.0)
    assert expired_rids(room, 1.0) == [("a", 1)]
    assert rids(room.finished("a")) == [2]  # the expired one was told "pending" already: not again


def test_a_finished_waiter_is_not_expired_later() -> None:
    room = WaitRoom()
    room.add("a", b"client-1", 1, deadline=1.0)
    room.add("b", b"client-2", 2, deadline=2.0)
    assert rids(room.finished("a")) == [1]
    assert expired_rids(room, 5.0) == [("b", 2)]


def test_clear_hands_back_every_waiter_and_leaves_none_to_answer() -> None:
    room = WaitRoom()
    room.add("a", b"client-1", 1, deadline=1.0)
    room.add("a", b"client-2", 2, deadline=2.0)
    room.add("b", b"client-3", 3, deadline=3.0)
    assert sorted(rids(room.clear())) == [1, 2, 3]
    assert len(room) == 0
    assert room.finished("a") == []
    assert expired_rids(room, 10.0) == []


def test_a_wait_for_any_of_many_is_answered_once_by_the_first_to_end() -> None:
    room = WaitRoom()
    room.add_any(["a", "b", "c"], b"client", 7, deadline=100.0)
    (waiter,) = room.finished("b")
    assert waiter.rid == 7 and waiter.ids == ("a", "b", "c")
    assert room.finished("a") == [] and room.finished("c") == []  # forgotten by the others
    assert len(room) == 0 and room.expired(1000.0) == []


def test_a_wait_for_any_expires_once_and_leaves_nothing_behind() -> None:
    room = WaitRoom()
    room.add_any(["a", "b"], b"client", 7, deadline=10.0)
    room.add("b", b"other", 8, deadline=50.0)
    assert [(task, w.rid) for task, w in room.expired(20.0)] == [("a", 7)]
    assert [w.rid for w in room.finished("b")] == [8] and len(room) == 0
