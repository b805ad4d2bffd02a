"""The lifecycle stage: ticket state for each ingested batch.

Runs inside the ingest agent's batch, after the raw events are stored and
before the offsets are committed, so state outputs share the batch's
at-least-once guarantee. Per batch it:

1. reloads from ClickHouse the history of tickets the batch touches that are
   not in memory (evicted, owned by another worker before a rebalance, or the
   worker restarted), so a late event never sees a partial ticket;
2. adds the batch's steps and follow-up satisfaction events to the store;
3. folds each touched ticket (:func:`stream.state.lifecycle.fold`) and returns
   the states to store.

Between batches, :meth:`TicketStage.check_sla` finds silent open tickets past
their deadline. State is a cache of ClickHouse: after a restart or a
rebalance the worker reloads the open tickets of its partitions
(:meth:`restore_open`), which is exactly consistent with the committed offsets
because events are stored before offsets are committed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection, Iterable, Sequence
from contextlib import closing
from datetime import datetime, timedelta, timezone

from ..contract import SatisfactionEvent, TicketEvent
from ..ingest.records import IngestBatch
from ..sink.clickhouse import Writer
from ..topology import TicketStateSettings
from .lifecycle import FollowUp, Step, TicketState
from .packed import pack_step_row
from .store import TicketStore

log = logging.getLogger("cxstream.state")

#: ticket ids per query (ClickHouse bounds a query's size; 20k ids of ~20 characters stay well below 256 KiB)
_IDS_PER_QUERY = 5_000
_STEP_COLUMNS = (
    "ticket_id, event_id, event_time, step, source_system, customer_id, department, closure_type, sla_deadline, "
    "province, city, district, channel, business_line, complaint_category, complaint_phenomenon, customer_tier, "
    "problem_location, kafka_partition"
)
_FOLLOWUP_COLUMNS = (
    "ticket_id, event_id, event_time, overall_score, problem_solved, nps, channel, source_system, customer_id, "
    "dim_reach_speed"
)


def _utc(value: datetime | None) -> datetime | None:
    # clickhouse-connect returns naive datetimes for DateTime64('UTC') from chDB
    return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)


def _code(value: str) -> str | None:
    # Codes repeat across millions of restored steps: one string object each (the driver makes one per row).
    return sys.intern(value) if value else None


def _step_from_row(row: tuple) -> tuple[str, int, Step]:
    (ticket_id, event_id, event_time, step, source, customer, department, closure, deadline, province, city,
     district, channel, line, category, phenomenon, tier, location, partition) = row  # fmt: skip
    # Restored ids are interned: the contributions and the customer histories, restored from other queries,
    # then share one string per ticket and customer (a driver makes a new one per row and query).
    return sys.intern(ticket_id), partition, Step(
        event_id=event_id, event_time=_utc(event_time), step=sys.intern(step), source_system=sys.intern(source),
        customer_id=sys.intern(customer), department=_code(department), closure_type=_code(closure), sla_deadline=_utc(deadline),
        province=_code(province), city=_code(city), district=_code(district), channel=_code(channel),
        business_line=_code(line), complaint_category=_code(category), complaint_phenomenon=_code(phenomenon),
        customer_tier=_code(tier), problem_location=_code(location),
    )  # fmt: skip


def _followup_from_row(row: tuple) -> tuple[str, FollowUp]:
    ticket_id, event_id, event_time, score, solved, nps, channel, source, customer, reach_speed = row
    return ticket_id, FollowUp(
        event_id=event_id, event_time=_utc(event_time), overall_score=score, problem_solved=solved, nps=nps,
        channel=channel, source_system=source, customer_id=customer, reach_speed=reach_speed,
    )  # fmt: skip


class TicketStage:
    def __init__(self, settings: TicketStateSettings, writer: Writer):
        self.settings = settings
        self.writer = writer
        self.store = TicketStore(settings)
        self.watermark: datetime | None = None  # newest ticket event time seen
        self._evicted_at: datetime | None = None  # the clock at the last eviction scan

    # -- loading from ClickHouse -------------------------------------------------------
    def _load(self, where: str, parameters: dict, by_ids: bool = False) -> int:
        """Load the steps matching ``where`` (over ``ticket_events``) and the follow-ups of their tickets.

        ``by_ids`` (a reload: ``where`` names the tickets, and selects their follow-ups as it is): both queries
        run before anything is added, so a failed query leaves no ticket in memory without its follow-ups (the
        retry would take it for loaded). Otherwise (a restore, up to millions of rows, redone whole if it
        fails) the rows are read a block at a time.
        """
        db = self.writer.database
        steps_sql = f"SELECT {_STEP_COLUMNS} FROM {db}.ticket_events WHERE {where}"
        # One query for all their follow-ups: the same condition as a subquery, not the ids inline
        # (a restart restores a million tickets; ids inline need a query per few thousand).
        followups_sql = f"SELECT {_FOLLOWUP_COLUMNS} FROM {db}.satisfaction_events WHERE ticket_id != '' AND " + (
            where if by_ids else f"ticket_id IN (SELECT ticket_id FROM {db}.ticket_events WHERE {where})"
        )
        if by_ids:
            client = self.writer.client
            steps = client.query(steps_sql, parameters=parameters).result_rows
            followups = client.query(followups_sql, parameters=parameters).result_rows if steps else []
            loaded = self._add_steps(steps)
            self._add_followups(followups, loaded)
            return len(loaded)
        with closing(self.writer.rows(steps_sql, parameters)) as steps:  # a stream left open holds the connection
            loaded = self._add_steps(steps)
        if loaded:
            with closing(self.writer.rows(followups_sql, parameters)) as followups:
                self._add_followups(followups, loaded)
        return len(loaded)

    def _add_steps(self, rows: Iterable[Sequence]) -> set[str]:
        loaded = set()
        store = self.store
        for row in rows:
            if row[0] in store:  # a further step of a ticket: added to its record, in journey order
                ticket_id, partition, step = _step_from_row(row)
                store.add_step(ticket_id, step, partition)
            else:  # the first (most often the only) step known: packed as it is read
                ticket_id, blob = pack_step_row(row)
                ticket_id = sys.intern(ticket_id)  # shared with the contributions and histories restored next
                store.put(ticket_id, blob)
            loaded.add(ticket_id)
        return loaded

    def _add_followups(self, rows: Iterable[Sequence], loaded: set[str]) -> None:
        add_followup = self.store.add_followup
        for row in rows:
            if row[0] in loaded:  # a follow-up of a ticket with no known step is not history to restore
                add_followup(*_followup_from_row(row))

    def reload(self, ticket_ids: Iterable[str]) -> int:
        """Bring tickets that are not in memory back from ClickHouse (their full history)."""
        missing = sorted({t for t in ticket_ids if t not in self.store})
        return sum(self._load("ticket_id IN %(ids)s", {"ids": missing[i : i + _IDS_PER_QUERY]}, by_ids=True)
                   for i in range(0, len(missing), _IDS_PER_QUERY))  # fmt: skip

    def open_tickets(self, partitions: Iterable[int]) -> tuple[str, dict]:
        """A condition over ``ticket_events`` selecting the open tickets of these source partitions, and its
        parameters (what :meth:`restore_open` loads; the indicator stage restores their contributions by it)."""
        db = self.writer.database
        since = datetime.now(timezone.utc) - self.settings.open_max_age
        return (
            f"ticket_id IN (SELECT ticket_id FROM {db}.ticket_state FINAL WHERE status = 'open' "
            f"AND last_event_time >= %(since)s) AND kafka_partition IN %(parts)s",
            {"since": since, "parts": sorted(set(partitions))},
        )

    def restore_open(self, partitions: Iterable[int], where: tuple[str, dict] | None = None) -> int:
        """Load the open tickets of these source partitions (after a start or a rebalance)."""
        parts = sorted(set(partitions))
        if not parts:
            return 0
        n = self._load(*(where or self.open_tickets(parts)))
        waiting = self._restore_waiting_followups(parts)
        self.store.settle()
        self._advance(self.store.newest_event_time())
        log.info("restored %d open tickets and %d follow-ups waiting for their ticket, of partitions %s, from ClickHouse",
                 n, waiting, parts)  # fmt: skip
        return n

    def _restore_waiting_followups(self, parts: list[int]) -> int:
        """Follow-ups that came before any step of their ticket (their topic read ahead of the ticket topic).

        The ticket's ``created`` step, when it comes, is not looked up in ClickHouse (most tickets are new):
        without these, a follow-up the previous owner (or run) held would never reach its ticket.
        """
        db = self.writer.database
        since = datetime.now(timezone.utc) - self.settings.open_max_age  # how long the store keeps them too
        rows = self.writer.client.query(
            f"SELECT {_FOLLOWUP_COLUMNS}, kafka_partition FROM {db}.satisfaction_events "
            f"WHERE ticket_id != '' AND kafka_partition IN %(parts)s AND event_time >= %(since)s "
            f"AND ticket_id NOT IN (SELECT ticket_id FROM {db}.ticket_events WHERE kafka_partition IN %(parts)s "
            # only the candidates' steps: not a set of every ticket id of these partitions
            f"AND ticket_id IN (SELECT ticket_id FROM {db}.satisfaction_events WHERE ticket_id != '' "
            f"AND kafka_partition IN %(parts)s AND event_time >= %(since)s))",
            parameters={"parts": parts, "since": since},
        ).result_rows
        for row in rows:
            ticket_id, followup = _followup_from_row(row[:-1])
            self.store.add_followup(ticket_id, followup, row[-1])
        return len(rows)

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        return self.store.drop_partitions(partitions)

    # -- per batch ---------------------------------------------------------------------
    def _advance(self, moment: datetime | None) -> None:
        if moment is not None and (self.watermark is None or moment > self.watermark):
            self.watermark = moment

    def needing_history(self, batches: dict[str, IngestBatch]) -> set[str]:
        """Tickets the batch touches that are not in memory and may have history in ClickHouse.

        A ticket first seen through its ``created`` step is new: looking it up
        would cost a query per batch for nothing (most tickets). Open tickets
        are restored at assignment, so what remains are late steps and
        follow-ups of closed or evicted tickets.
        """
        new: set[str] = set()
        ids: set[str] = set()
        tickets = batches.get("ticket_event")
        if tickets:
            for a in tickets.accepted:
                (new if a.event.step == "created" else ids).add(a.event.ticket_id)
        sats = batches.get("satisfaction_event")
        if sats:
            ids.update(a.event.ticket_id for a in sats.accepted if a.event.ticket_id)
        return {t for t in ids - new if t not in self.store}

    def apply(self, batches: dict[str, IngestBatch], clock: datetime) -> list[TicketState]:
        """Add the batch's events (after :meth:`reload` of the touched tickets) and fold the touched tickets."""
        # Every ticket the batch names is folded, even if its events were known:
        # a retried batch must write the same states again.
        touched: set[str] = set()
        tickets = batches.get("ticket_event")
        if tickets:
            add_step, step_of, newest = self.store.add_step, Step.from_event, self.watermark
            for a in tickets.accepted:
                e: TicketEvent = a.event
                add_step(e.ticket_id, step_of(e), a.record.partition)
                touched.add(e.ticket_id)
                if newest is None or e.event_time > newest:
                    newest = e.event_time
            self._advance(newest)
        sats = batches.get("satisfaction_event")
        if sats:
            for a in sats.accepted:
                s: SatisfactionEvent = a.event
                if s.ticket_id:
                    self.store.add_followup(s.ticket_id, FollowUp.from_event(s), a.record.partition)
                    touched.add(s.ticket_id)
        states = [self.store.state(t, clock) for t in sorted(touched) if t in self.store]
        self.store.settle()  # all but the newest changes packed again (a million open tickets: stream.state.packed)
        return states

    def sla_clock(self, caught_up: bool, now: datetime | None = None) -> datetime:
        """The time silent tickets are judged at.

        Behind (replaying, or lagging), a partition's future events may still
        close a ticket in time, so judge at the newest event time minus the
        allowed lateness. Caught up, nothing is pending: judge at the wall
        clock (or the event-time watermark, if the feed runs ahead of it).
        """
        now = now or datetime.now(timezone.utc)
        behind = (self.watermark - self.settings.lateness) if self.watermark else None
        if not caught_up:
            return behind or datetime.min.replace(tzinfo=timezone.utc)
        return max(now, behind) if behind else now

    def check_sla(self, clock: datetime) -> list[TicketState]:
        """States of open tickets that went past their deadline by ``clock`` (each reported once)."""
        return [self.store.state(t, clock) for t in self.store.overdue(clock)]

    def evict(self, clock: datetime, keep: Collection[str] = ()) -> int:
        """Drop tickets past their retention, but those in ``keep`` (see :meth:`TicketStore.evict`); 0 if not due.

        A scan of every ticket, so it runs when the clock has moved by 1/72 of the shorter retention (an hour for
        3 days) since the last one, or when the store is over ``max_tickets``: not at every SLA check.
        """
        s = self.settings
        step = min(s.closed_retention, s.open_max_age) / 72
        due = (
            self._evicted_at is None
            or not timedelta(0) <= clock - self._evicted_at < step  # moved on by a step, or went back (a backfill)
            or len(self.store) > s.max_tickets
        )
        if not due:
            return 0
        self._evicted_at = clock
        gone = self.store.evict(clock, keep)
        if self.store.held_back:
            self._evicted_at = None  # some stayed only for rows not yet stored: due again at the next check
        return gone


