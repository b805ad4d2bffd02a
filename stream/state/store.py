"""Bounded, partition-aware store of ticket lifecycles (synchronous, no I/O).

The stream keeps a :class:`~stream.state.lifecycle.TicketRecord` (the set of a
ticket's steps and follow-ups) for open and recently closed tickets only, packed
into bytes between batches (:mod:`stream.state.packed`: a million open tickets
are a million records):

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
import itertools
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime

from ..topology import TicketStateSettings
from . import packed
from .lifecycle import FollowUp, Step, TicketRecord

#: the records last changed stay unpacked, this many at most: a ticket's next step often comes a batch or two
#: later, and unpacking and packing it again costs about as much as its fold (~16 MB for 50,000)
_HOT_KEEP = 50_000
#: SLA deadlines are filed by the minute they fall in: a list entry per ticket (~9 B), not a heap tuple (~96 B)
_MINUTE_US = 60_000_000


def _header(v: TicketRecord | bytes) -> tuple[bool, int | None, int, int]:
    """(closed, partition, SLA deadline, last event time) of a record, packed or not; times in µs."""
    if type(v) is bytes:
        return packed.header(v)
    return v.is_closed(), v.partition, packed.micros(v.sla_deadline()), packed.micros(v.last_event_time())


def _partition(v: TicketRecord | bytes) -> int | None:
    return packed.partition(v) if type(v) is bytes else v.partition


class _Partitions(Mapping):
    """Ticket -> source partition, read from the records (a dict of its own cost ~40 B per ticket)."""

    __slots__ = ("_records",)

    def __init__(self, records: dict[str, TicketRecord | bytes]):
        self._records = records

    def __getitem__(self, ticket_id: str) -> int:
        part = _partition(self._records[ticket_id])
        if part is None:
            raise KeyError(ticket_id)
        return part

    def get(self, ticket_id: str, default=None):
        rec = self._records.get(ticket_id)
        part = None if rec is None else _partition(rec)
        return default if part is None else part

    def __iter__(self) -> Iterator[str]:
        return (t for t, rec in self._records.items() if _partition(rec) is not None)

    def __len__(self) -> int:
        return sum(1 for rec in self._records.values() if _partition(rec) is not None)


class TicketStore:
    def __init__(self, settings: TicketStateSettings):
        self.settings = settings
        #: ticket -> its record: packed at rest (:mod:`stream.state.packed`), as objects while a batch works on it
        self.records: dict[str, TicketRecord | bytes] = {}
        self._hot: dict[str, None] = {}  # the records held as objects, oldest change first (settle() packs them)
        self.partition_of: Mapping[str, int] = _Partitions(self.records)
        # Tickets that were open with an SLA deadline, filed by the deadline's minute; the minutes in a heap.
        self._due: dict[int, list[str]] = {}
        self._due_minutes: list[int] = []
        self._filed = 0  # entries in self._due (stale ones included, dropped as they come due)
        self._overdue: set[str] = set()  # open tickets already reported past their deadline
        self.held_back = 0  # tickets the last evict() kept although past their retention (``keep``)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, ticket_id: str) -> bool:
        return ticket_id in self.records

    def get(self, ticket_id: str) -> TicketRecord | None:
        """The record as objects (unpacked for the caller: to change it, use :meth:`record`)."""
        rec = self.records.get(ticket_id)
        return packed.unpack(rec) if type(rec) is bytes else rec

    def state(self, ticket_id: str, clock: datetime | None = None):
        """The ticket's folded :class:`~stream.state.lifecycle.TicketState`."""
        return self.get(ticket_id).state(ticket_id, clock)

    def record(self, ticket_id: str, partition: int | None = None) -> TicketRecord:
        """The record to change (created if new), held as objects until :meth:`settle`."""
        rec = self.records.get(ticket_id)
        hot = self._hot
        if type(rec) is TicketRecord:
            del hot[ticket_id]  # changed again: now the newest
        else:
            if len(hot) >= 2 * _HOT_KEEP:  # a restore of millions stays packed as it goes
                self.settle()
            rec = TicketRecord(partition) if rec is None else packed.unpack(rec)
            self.records[ticket_id] = rec
        hot[ticket_id] = None
        if partition is not None:
            rec.partition = partition
        return rec

    def put(self, ticket_id: str, blob: bytes) -> None:
        """A new ticket, already packed (a restore: :func:`~stream.state.packed.pack_step_row`)."""
        self.records[ticket_id] = blob
        closed, _, deadline, _ = _header(blob)
        if deadline != packed.NO_TIME and not closed:
            self._file(deadline, ticket_id)
            self._overdue.discard(ticket_id)

    def settle(self, keep: int = _HOT_KEEP) -> None:
        """Pack the records changed longest ago, all but the ``keep`` newest (the end of a batch or a restore)."""
        records, hot = self.records, self._hot
        for t in list(itertools.islice(hot, max(0, len(hot) - keep))):
            del hot[t]
            rec = records.get(t)
            if type(rec) is TicketRecord:
                records[t] = packed.pack(rec)

    def newest_event_time(self) -> datetime | None:
        """The latest event time over every ticket held."""
        newest = max((_header(rec)[3] for rec in self.records.values()), default=packed.NO_TIME)
        return packed.moment(newest)

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
        rec = self.record(ticket_id)
        if rec.partition is None:
            rec.partition = partition  # otherwise the ticket's steps place it
        return rec.add_followup(followup)

    def _watch(self, ticket_id: str, rec: TicketRecord) -> None:
        deadline = rec.sla_deadline()
        if deadline is not None and not rec.is_closed():
            self._file(packed.micros(deadline), ticket_id)
            self._overdue.discard(ticket_id)  # a reopen or a new deadline arms the check again

    def _file(self, deadline_us: int, ticket_id: str) -> None:
        minute = deadline_us // _MINUTE_US
        filed = self._due.get(minute)
        if filed is None:
            filed = self._due[minute] = []
            heapq.heappush(self._due_minutes, minute)
        filed.append(ticket_id)
        self._filed += 1

    def overdue(self, clock: datetime) -> list[str]:
        """Open tickets whose SLA deadline passed by ``clock`` and that were not reported yet."""
        due: list[str] = []
        now = packed.micros(clock)
        current_minute = now // _MINUTE_US
        minutes = self._due_minutes
        while minutes and minutes[0] <= current_minute:
            minute = minutes[0]
            filed = self._due[minute]
            later = []  # this minute's deadlines still ahead of the clock
            for ticket_id in filed:
                rec = self.records.get(ticket_id)
                if rec is None or ticket_id in self._overdue:
                    continue  # evicted, or already reported
                closed, _, deadline, _ = _header(rec)
                if closed or deadline == packed.NO_TIME or deadline // _MINUTE_US != minute:
                    continue  # stale entry: closed, or its deadline moved (filed again under its new minute)
                if deadline > now:
                    later.append(ticket_id)
                elif ticket_id not in self._overdue:  # filed twice under one minute: reported once
                    self._overdue.add(ticket_id)
                    due.append(ticket_id)
            self._filed -= len(filed) - len(later)
            if later:
                self._due[minute] = later
                break  # the clock's own minute: the rest is not due yet
            del self._due[minute]
            heapq.heappop(minutes)
        return due

    def rearm(self, ticket_ids: Iterable[str]) -> None:
        """Report these tickets again at the next check (their breach could not be stored)."""
        for t in ticket_ids:
            rec = self.records.get(t)
            self._overdue.discard(t)
            if rec is not None and (deadline := _header(rec)[2]) != packed.NO_TIME:
                self._file(deadline, t)

    def evict(self, clock: datetime, keep: Collection[str] = ()) -> int:
        """Drop tickets past their retention; then the stalest beyond ``max_tickets``. Those in ``keep`` stay
        (their newest rows are not stored yet, and an evicted ticket is read back from ClickHouse)."""
        s = self.settings
        try:
            closed_before, silent_before = clock - s.closed_retention, clock - s.open_max_age
        except OverflowError:  # the clock has not started (catching up, no event time yet): nothing is old
            closed_before = silent_before = clock
        now, closed_before, silent_before = map(packed.micros, (clock, closed_before, silent_before))
        gone = []
        held_back = 0
        for t, rec in self.records.items():
            closed, _, _, last = _header(rec)
            if (now if last == packed.NO_TIME else last) < (closed_before if closed else silent_before):
                if t in keep:
                    held_back += 1
                else:
                    gone.append(t)
        self.held_back = held_back
        excess = len(self.records) - len(gone) - s.max_tickets
        if excess > 0:
            leaving = set(gone)
            candidates = (t for t in self.records if t not in leaving and t not in keep)

            def stalest(t: str) -> int:
                last = _header(self.records[t])[3]
                return now if last == packed.NO_TIME else last

            gone += heapq.nsmallest(excess, candidates, key=stalest)
        self._forget(gone)
        return len(gone)

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        lost = set(partitions)
        gone = [t for t, rec in self.records.items() if _partition(rec) in lost]
        self._forget(gone)
        return len(gone)

    def _forget(self, tickets: Iterable[str]) -> None:
        for t in tickets:
            self.records.pop(t, None)
            self._overdue.discard(t)
            self._hot.pop(t, None)
        if self._filed > 2 * len(self.records) + 1024:
            # Stale entries are skipped lazily; drop them when they dominate, to bound the filing too.
            records = self.records
            for minute, filed in list(self._due.items()):
                self._due[minute] = [t for t in filed if t in records]
            self._filed = sum(map(len, self._due.values()))

    def filed_deadlines(self) -> int:
        """Entries filed for the SLA check (bounded: at most about twice the tickets held)."""
        return self._filed
