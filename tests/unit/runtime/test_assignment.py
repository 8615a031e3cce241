"""Following the held partitions: what to forget, what to restore."""

from __future__ import annotations

from pipelines.runtime.assignment import Assignment


class Held:
    def __init__(self, *partitions: int) -> None:
        self.now = frozenset(partitions)

    def __call__(self) -> frozenset[int]:
        return self.now


def test_the_first_look_restores_every_partition_held() -> None:
    change = Assignment(Held(0, 2)).follow()
    assert change is not None
    assert (change.before, change.restore, change.forget) == (None, frozenset({0, 2}), ())


def test_a_lost_partition_is_forgotten_and_a_regained_one_restored_afresh() -> None:
    held = Held(0, 1)
    a = Assignment(held)
    a.follow()
    a.note("s0", 0)
    a.note("s1", 1)
    held.now = frozenset({1, 2})
    change = a.follow()
    assert change is not None
    assert (change.forget, change.restore) == (("s0",), frozenset({2}))
    assert a.partition("s0") is None
    assert a.partition("s1") == 1
    held.now = frozenset({0, 1, 2})  # 0 comes back: another worker had it meanwhile
    a.note("s0", 0)  # a record fetched before the revocation, noted again
    change = a.follow()
    assert change is not None
    assert (change.forget, change.restore) == (("s0",), frozenset({0}))
    assert a.follow() is None


def test_records_of_a_partition_revoked_meanwhile_are_unheld() -> None:
    held = Held(0, 1)
    a = Assignment(held)
    a.follow()
    held.now = frozenset({1})
    a.follow()
    a.note("late", 0)
    a.note("s1", 1)
    assert a.unheld({0, 1}) == ["late"]
    assert a.unheld({1}) == []
    assert a.partition("late") is None


def test_without_an_assignor_nothing_ever_changes() -> None:
    a = Assignment(None)
    a.note("s", 3)
    assert a.follow() is None
    assert a.unheld({3}) == []
    assert a.partition("s") == 3
