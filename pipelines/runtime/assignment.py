"""Which entities (streams, cameras) a step holds, following its input partitions.

A media step keeps state per entity in memory, each entity on one input partition. When
the group rebalances, an entity whose partition went to another worker must be forgotten
here (else this worker raises silence alerts for it and keeps its memory for ever), and so
must an entity of a partition assigned anew (another worker had it meanwhile, so what this
one remembers is stale). The partitions newly held are those whose entities' checkpointed
state the step reads back (:mod:`pipelines.runtime.checkpoints`); at the first look that is
every partition held.

>>> held = frozenset({0, 1})
>>> a = Assignment(lambda: held)
>>> a.follow().restore
frozenset({0, 1})
>>> a.note("mic-1", 0); a.note("mic-2", 1)
>>> held = frozenset({1})
>>> a.follow().forget
('mic-1',)
>>> a.follow() is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["Assignment", "Change"]


@dataclass(frozen=True)
class Change:
    """What changed in the held partitions since the last look."""

    held: frozenset[int]  # held now
    before: frozenset[int] | None  # as last seen; None at the first look
    forget: tuple[str, ...]  # entities of partitions no longer held or assigned anew
    restore: frozenset[int]  # partitions whose entities' state to read back


class Assignment:
    """Each known entity's input partition, and the partitions held as last seen.

    ``assigned`` says which input partitions the worker holds now (from Faust's assignor);
    ``None`` means one worker holding every partition for good (tests, tools): then
    :meth:`follow` never reports a change.
    """

    def __init__(self, assigned: Callable[[], frozenset[int]] | None) -> None:
        self.assigned = assigned
        self.held: frozenset[int] | None = None
        self.partitions: dict[str, int] = {}

    def note(self, entity: str, partition: int) -> None:
        """``entity`` is on input partition ``partition``."""
        self.partitions[entity] = partition

    def partition(self, entity: str) -> int | None:
        return self.partitions.get(entity)

    def follow(self) -> Change | None:
        """The change since the last look (its ``forget`` already dropped here), or
        ``None`` if the held partitions are the same."""
        if self.assigned is None:
            return None
        held = self.assigned()
        if held == self.held:
            return None
        before, self.held = self.held, held
        fresh = held - before if before is not None else held
        forget = tuple(e for e, p in self.partitions.items() if p not in held or p in fresh)
        self.forget(forget)
        return Change(held, before, forget, frozenset(fresh))

    def unheld(self, partitions: Iterable[int]) -> list[str]:
        """Entities of ``partitions`` not held (records fetched before a revocation), now
        dropped here."""
        if self.held is None:
            return []
        gone = set(partitions) - self.held
        if not gone:
            return []
        ids = [e for e, p in self.partitions.items() if p in gone]
        self.forget(ids)
        return ids

    def forget(self, ids: Iterable[str]) -> None:
        for entity in ids:
            self.partitions.pop(entity, None)
