"""Bounded, partition-aware store of ticket lifecycles (synchronous, no I/O).

The stream keeps a :class:`~stream.state.lifecycle.TicketRecord` (the set of a
ticket's steps and follow-ups) for open and recently closed tickets only:

- a closed ticket leaves ``closed_retention`` after its final close, an open
  one after ``open_max_age`` without events, and past ``max_tickets`` the
  stalest leave first, so memory stays bounded however many tickets pass;
- open tickets sit in a deadline heap, so a silent ticket's SLA breach is found
  by popping the heap, not by scanning every ticket;
- each ticket remembers the Kafka partition its events came from, so a worker
  drops exactly the tickets of partitions it loses in a rebalance.

ClickHouse holds every event, so nothing evicted here is lost: a late event of
an evicted ticket reloads its history first (see ``TicketStage``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from ..topology import TicketStateSettings
from .lifecycle import FollowUp, Step, TicketRecord


class _Partitions(Mapping):
    """Ticket -> source partition, read from the records (a dict of its own cost ~40 B per ticket)."""

    __slots__ = ("_records",)

    def __init__(self, records: dict[str, TicketRecord]):
        self._records = records

    def __getitem__(self, ticket_id: str) -> int:
        rec = self._records[ticket_id]
        if rec.partition is None:
            raise KeyError(ticket_id)
        return rec.partition

    def get(self, ticket_id: str, default=None):
        rec = self._records.get(ticket_id)
        return default if rec is None or rec.partition is None else rec.partition

    def __iter__(self) -> Iterator[str]:
        return (t for t, rec in self._records.items() if rec.partition is not None)

    def __len__(self) -> int:
        return sum(1 for rec in self._records.values() if rec.partition is not None)


class TicketStore:
    def __init__(self, settings: TicketStateSettings):
        self.settings = settings
        self.records: dict[str, TicketRecord] = {}
        self.partition_of: Mapping[str, int] = _Partitions(self.records)
        self._deadlines: list[tuple[datetime, str]] = []  # (sla deadline, ticket) of tickets that were open
        self._overdue: set[str] = set()  # open tickets already reported past their deadline

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, ticket_id: str) -> bool:
        return ticket_id in self.records

    def record(self, ticket_id: str, partition: int | None = None) -> TicketRecord:
        rec = self.records.get(ticket_id)
        if rec is None:
            rec = self.records[ticket_id] = TicketRecord(partition)
        elif partition is not None:
            rec.partition = partition
        return rec

    def add_step(self, ticket_id: str, step: Step, partition: int | None = None) -> bool:
        rec = self.record(ticket_id, partition)
        known = len(rec.steps)
        if not rec.add_step(step):
            return False
        # Only a new deadline or a reopen arms the SLA check (again); the heap entry of the
        # current deadline stands for every other step (a replaced event re-arms, to be safe).
        if step.sla_deadline is not None or step.step == "reopened" or len(rec.steps) == known:
            self._watch(ticket_id, rec)
        return True

    def add_followup(self, ticket_id: str, followup: FollowUp, partition: int | None = None) -> bool:
        """Add a follow-up; ``partition`` (its satisfaction event's, the same number as the ticket's events:
        co-partitioned) places a ticket known only by its follow-ups, so a rebalance hands it over too."""
        rec = self.records.get(ticket_id)
        if rec is None:
            rec = self.records[ticket_id] = TicketRecord(partition)
        elif rec.partition is None:
            rec.partition = partition  # otherwise the ticket's steps place it
        return rec.add_followup(followup)

    def _watch(self, ticket_id: str, rec: TicketRecord) -> None:
        deadline = rec.sla_deadline()
        if deadline is not None and not rec.is_closed():
            heapq.heappush(self._deadlines, (deadline, ticket_id))
            self._overdue.discard(ticket_id)  # a reopen or a new deadline arms the check again

    def overdue(self, clock: datetime) -> list[str]:
        """Open tickets whose SLA deadline passed by ``clock`` and that were not reported yet."""
        due = []
        heap = self._deadlines
        while heap and heap[0][0] <= clock:
            deadline, ticket_id = heapq.heappop(heap)
            rec = self.records.get(ticket_id)
            if rec is None or rec.is_closed() or rec.sla_deadline() != deadline or ticket_id in self._overdue:
                continue  # stale heap entry: evicted, closed, deadline moved, or already reported
            self._overdue.add(ticket_id)
            due.append(ticket_id)
        return due

    def rearm(self, ticket_ids: Iterable[str]) -> None:
        """Report these tickets again at the next check (their breach could not be stored)."""
        for t in ticket_ids:
            rec = self.records.get(t)
            self._overdue.discard(t)
            if rec is not None and rec.sla_deadline() is not None:
                heapq.heappush(self._deadlines, (rec.sla_deadline(), t))

    def evict(self, clock: datetime) -> int:
        """Drop tickets past their retention; then the stalest beyond ``max_tickets``."""
        s = self.settings
        try:
            closed_before, silent_before = clock - s.closed_retention, clock - s.open_max_age
        except OverflowError:  # the clock has not started (catching up, no event time yet): nothing is old
            closed_before = silent_before = clock
        gone = [
            t
            for t, rec in self.records.items()
            if (rec.last_event_time() or clock) < (closed_before if rec.is_closed() else silent_before)
        ]
        excess = len(self.records) - len(gone) - s.max_tickets
        if excess > 0:
            leaving = set(gone)
            keep = (t for t in self.records if t not in leaving)
            gone += heapq.nsmallest(excess, keep, key=lambda t: self.records[t].last_event_time() or clock)
        self._forget(gone)
        return len(gone)

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        lost = set(partitions)
        gone = [t for t, rec in self.records.items() if rec.partition in lost]
        self._forget(gone)
        return len(gone)

    def _forget(self, tickets: Iterable[str]) -> None:
        for t in tickets:
            self.records.pop(t, None)
            self._overdue.discard(t)
        if len(self._deadlines) > 2 * len(self.records) + 1024:
            # Stale entries are skipped lazily; rebuild when they dominate, to bound the heap too.
            self._deadlines = [(d, t) for d, t in self._deadlines if t in self.records]
            heapq.heapify(self._deadlines)
