"""The indicator stage: each batch's facts into the cube, changed cells out.

Runs inside the ingest agent's batch, after the lifecycle stage and before the
commit. Per batch:

1. each satisfaction event adds its fact; each ticket whose state changed
   retracts its previous contribution and adds the new one (a late step or a
   reopen corrects the windows it touches); facts for windows that were final
   before the batch are returned as too late;
2. the watermark moves to the batch's newest event times;
3. the changed cells are returned for ClickHouse (``indicator_cells``) and the
   ``cx.indicator-updates.v1`` topic.

The cells are this worker's partial (column ``writer``, a new id at every
start): partials add up, so a restart or a rebalance hands nothing over — the
new writer starts from zero and every sum stays exact. What a ticket has
contributed is known for every ticket in memory; for a ticket that comes back
from ClickHouse (after a restart, a rebalance or eviction) it is rebuilt from
its stored ``ticket_state`` row, written in the same batch as the cells it
contributed to, so a retraction by the new writer cancels the old writer's
contribution in the sum.
"""

from __future__ import annotations

import logging
import random
import struct
import sys
from collections.abc import Iterable
from contextlib import closing
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import orjson
import pyarrow as pa

from ..ingest.records import IngestBatch
from ..sink.clickhouse import Writer
from ..state.lifecycle import TicketState
from ..topology import IndicatorSettings
from .counters import COUNTERS
from .cube import Columns, Cube, TooLate
from .facts import Cell, Fact, satisfaction_columns, ticket_facts

log = logging.getLogger("cxstream.indicators")

_TS = pa.timestamp("ms", tz="UTC")
_S = pa.timestamp("s", tz="UTC")


#: the stored state a ticket's contribution is rebuilt from (facts.ticket_facts reads these)
_STATE_COLUMNS = (
    "ticket_id", "province", "city", "district", "channel", "business_line", "status", "created_at", "closed_at",
    "first_closed_at", "handling_s", "first_contact_resolution", "internally_resolved", "customer_solved",
    "perception_gap", "sla_breach", "sla_breached", "sla_deadline", "reopen_count", "followup_reach_speed",
)  # fmt: skip


def _utc(v: datetime | None) -> datetime | None:
    return v if v is None or v.tzinfo else v.replace(tzinfo=timezone.utc)


class IndicatorStage:
    def __init__(self, settings: IndicatorSettings, writer: Writer, source_topics: dict[str, str]):
        self.settings = settings
        self.source_topics = source_topics  # raw table -> Kafka topic (watermarks are per topic partition)
        self.writer = writer
        self.cube = Cube(settings.windows, settings.lateness)
        self.writer_id = random.SystemRandom().getrandbits(63)  # this run's partials
        self.contrib: dict[str, bytes] = {}  # ticket -> its applied facts, packed (see _pack)

    # -- per batch ---------------------------------------------------------------------
    def apply(
        self, batches: dict[str, IngestBatch], states: Iterable[TicketState], partition_of: dict[str, int]
    ) -> list[TooLate]:
        late: list[TooLate] = []
        sats = batches.get("satisfaction_event")
        if sats is not None and sats.accepted:
            columns = satisfaction_columns([a.event for a in sats.accepted], self.settings.satisfied_min_score)
            late += self.cube.add_columns(*columns, kind="satisfaction")
        late += self.apply_states(states, partition_of)
        # The watermark moves after the batch: a batch is judged against what came
        # before it, however much of a partition's backlog it carries.
        newest: dict[tuple[str, int], datetime] = {}
        for contract in ("ticket_event", "satisfaction_event"):
            b = batches.get(contract)
            if b is not None:
                for a in b.accepted:
                    source = (a.record.topic, a.record.partition)
                    t = newest.get(source)
                    if t is None or a.event.event_time > t:
                        newest[source] = a.event.event_time
        for source, t in newest.items():
            self.cube.advance(t, source)
        return late

    def apply_states(self, states: Iterable[TicketState], partition_of: dict[str, int]) -> list[TooLate]:
        """Retract each ticket's previous contribution and add the one of its new state."""
        late: list[TooLate] = []
        contrib = self.contrib
        for s in states:
            facts = ticket_facts(s)
            new = _pack(partition_of.get(s.ticket_id, 0), facts, self.cube)
            held = contrib.get(s.ticket_id)
            if held is not None and held[4:] == new[4:]:  # the bytes after the partition
                contrib[s.ticket_id] = new  # the partition may have changed
                continue
            # Only the facts that changed move: an unchanged fact in a final window is not "late".
            old = _unpack(held, self.cube) if held is not None else ()
            gone = [f for f in old if f not in facts]
            added = [f for f in facts if f not in old]
            if gone:
                self.cube.add(gone, s.ticket_id, sign=-1.0)
            if added:
                late += self.cube.add(added, s.ticket_id)
            contrib[s.ticket_id] = new  # after the cube took them: a failed add is retried whole
        return late

    def flush(self) -> Columns:
        return self.cube.flush_columns()

    def forget_tickets(self, keep: Iterable[str]) -> None:
        """Drop contributions of tickets no longer in state (bounded like the state)."""
        if not isinstance(keep, set | dict):  # the ticket store's dict is taken as it is: no copy of a million ids
            keep = set(keep)
        for t in [t for t in self.contrib if t not in keep]:
            del self.contrib[t]

    # -- restoring from ClickHouse -------------------------------------------------------
    def remember_stored(self, ticket_ids: Iterable[str], partition_of: dict[str, int]) -> int:
        """Rebuild what these tickets have contributed, from their stored state rows."""
        ids = sorted(set(ticket_ids) - set(self.contrib))
        if not ids:
            return 0
        # at most 5k ids per query: ClickHouse bounds a query's size
        return sum(self._remember("ticket_id IN %(ids)s", {"ids": ids[i : i + 5_000]}, partition_of)
                   for i in range(0, len(ids), 5_000))  # fmt: skip

    def remember_where(self, where: str, parameters: dict, partition_of: dict[str, int]) -> int:
        """:meth:`remember_stored` for the tickets ``where`` selects over ``ticket_events`` (one query; a
        restart restores up to millions of tickets)."""
        return self._remember(f"ticket_id IN (SELECT ticket_id FROM {self.writer.database}.ticket_events WHERE {where})",
                              parameters, partition_of, skip=set(self.contrib))  # fmt: skip

    def _remember(self, condition: str, parameters: dict, partition_of: dict[str, int], skip: set = frozenset()) -> int:
        """Contributions of the tickets ``condition`` selects over ``ticket_state`` (but those in ``skip``)."""
        db = self.writer.database
        rows = self.writer.rows(
            f"SELECT {', '.join(_STATE_COLUMNS)} "
            # newest row per ticket without FINAL (a merge-on-read of the whole table)
            f"FROM {db}.ticket_state WHERE {condition} ORDER BY updated_at DESC LIMIT 1 BY ticket_id",
            parameters,
        )
        n = 0
        with closing(rows):  # a stream left open holds the connection
            for row in rows:
                if row[0] in skip:
                    continue
                n += 1
                d = dict(zip(_STATE_COLUMNS, row))
                d["ticket_id"] = sys.intern(d["ticket_id"])  # the restored ticket's string (TicketStage interns them)
                for k in ("created_at", "closed_at", "first_closed_at", "sla_deadline"):
                    d[k] = _utc(d[k])
                speed = d.pop("followup_reach_speed")
                d["followup"] = SimpleNamespace(reach_speed=speed) if speed is not None else None
                facts = ticket_facts(SimpleNamespace(**d))  # type: ignore[arg-type]
                self.contrib[d["ticket_id"]] = _pack(partition_of.get(d["ticket_id"], 0), facts, self.cube)
        return n

    def restore_watermark(self, partitions: Iterable[int]) -> None:
        """After an assignment: the newest event time each source partition had reached (too-late judgement)."""
        parts = sorted(set(partitions))
        if not parts:
            return
        db = self.writer.database
        for table in ("ticket_events", "satisfaction_events"):
            rows = self.writer.client.query(
                f"SELECT kafka_partition, max(event_time) FROM {db}.{table} WHERE kafka_partition IN %(p)s "
                f"GROUP BY kafka_partition",
                parameters={"p": parts},
            ).result_rows
            for partition, newest in rows:
                self.cube.advance(_utc(newest), (self.source_topics[table], partition))

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Partitions moved to another worker: stop judging lateness by them and forget their tickets.

        This worker's cells stay: they are its partial, still part of every sum.
        """
        lost = set(partitions)
        self.cube.forget_partitions(lost)
        for t in [t for t, packed in self.contrib.items() if _partition(packed) in lost]:
            del self.contrib[t]


_HEAD = struct.Struct("<iI")  # partition, the cube's id of the ticket's cell
_FACT = struct.Struct("<qB")  # epoch seconds, counters
_COUNTER = struct.Struct("<Bd")  # counter index, value
_NO_CELL = 0xFFFFFFFF  # no facts (the cube's cell ids stay below 2**24)


def _pack(partition: int, facts: tuple[Fact, ...], cube: Cube) -> bytes:
    """A ticket's applied facts as bytes: partition, cell code, then each fact's time and counters.

    A million open tickets are held: a tuple of facts costs ~170 B a ticket, these bytes ~75. Equal facts pack
    to equal bytes, so a contribution that did not change is found by comparing them (after the partition).

    >>> from stream.indicators.facts import Cell
    >>> from datetime import timedelta
    >>> cube = Cube([], lateness=timedelta(hours=2))
    >>> cell = Cell("P", "C", "D", "hotline", "mobile")
    >>> facts = ((100, cell, ((0, 1.0),)), (200, cell, ((3, 1.0), (5, 7.5))))
    >>> packed = _pack(4, facts, cube)
    >>> _partition(packed), _unpack(packed, cube) == facts, len(packed)
    (4, True, 53)
    """
    if not facts:
        return _HEAD.pack(partition, _NO_CELL)
    cell = facts[0][1]
    parts = [_HEAD.pack(partition, cube.cell_id(cell))]
    for t, c, counters in facts:
        if c is not cell and c != cell:
            raise ValueError(f"a ticket's facts span two cells: {cell} and {c}")
        parts.append(_FACT.pack(t, len(counters)))
        parts += [_COUNTER.pack(i, v) for i, v in counters]
    return b"".join(parts)


def _partition(packed: bytes) -> int:
    return _HEAD.unpack_from(packed)[0]


def _unpack(packed: bytes, cube: Cube) -> tuple[Fact, ...]:
    _, cell_id = _HEAD.unpack_from(packed)
    if cell_id == _NO_CELL:
        return ()
    cell = cube.cell_of(cell_id)
    facts = []
    at = _HEAD.size
    while at < len(packed):
        t, n = _FACT.unpack_from(packed, at)
        at += _FACT.size
        counters = tuple(_COUNTER.unpack_from(packed, at + k * _COUNTER.size) for k in range(n))
        at += n * _COUNTER.size
        facts.append((t, cell, counters))
    return tuple(facts)


def _cell_columns(cube: Cube, cells: Columns) -> dict[str, np.ndarray]:
    """Province, city, district, channel and business line of each row, from the interned cell ids."""
    table = np.array([tuple(c) for c in cube.cells_by_id] or [("",) * 5], dtype=object).reshape(-1, 5)
    picked = table[cells.cell] if len(cells) else np.empty((0, 5), dtype=object)
    return {name: picked[:, i] for i, name in enumerate(Cell._fields)}


def cells_table(cube: Cube, cells: Columns, writer: int, version: int, updated_at_ms: int) -> pa.Table:
    """Changed cells -> ``indicator_cells`` rows, column by column (no per-cell Python)."""
    n = len(cells)
    data = {
        "window": pa.array(cells.window, pa.string()),
        "window_start": pa.array(cells.start, _S),
        "window_end": pa.array(cells.end, _S),
        **{name: pa.array(col, pa.string()) for name, col in _cell_columns(cube, cells).items()},
        "writer": pa.array(np.full(n, writer, np.uint64)),
        **{name: pa.array(cells.values[:, i]) for i, name in enumerate(COUNTERS)},
        "version": pa.array(np.full(n, version, np.uint64)),
        "updated_at": pa.array(np.full(n, updated_at_ms, np.int64), _TS),
    }
    return pa.table(data)


def too_late_table(late: list[TooLate], watermark: datetime | None, recorded_at_ms: int) -> pa.Table:
    return pa.table(
        {
            "event_id": pa.array([x.source for x in late], pa.string()),
            "source": pa.array([x.kind for x in late], pa.string()),
            "fact_time": pa.array([x.fact_time for x in late], _TS),
            "window": pa.array([x.window for x in late], pa.string()),
            "window_start": pa.array([x.start for x in late], _S),
            "district": pa.array([x.district for x in late], pa.string()),
            "watermark": pa.array([watermark] * len(late), _TS),
            "recorded_at": pa.array([recorded_at_ms] * len(late), _TS),
        }
    )


def update_messages(cube: Cube, cells: Columns, writer: int, version: int) -> list[tuple[bytes, bytes]]:
    """(key, value) Kafka messages: one ``IndicatorUpdate`` per district, its changed cells as columns.

    Columnar because a replay batch changes tens of thousands of cells: one array
    per field and district (written by orjson straight from numpy), not a dict
    per cell. Counters that are zero in every cell of the message are left out;
    counts go out as integers.
    """
    if not len(cells):
        return []
    cols = _cell_columns(cube, cells)
    start = np.datetime_as_string(cells.start.astype("datetime64[s]"), unit="s", timezone="UTC")
    end = np.datetime_as_string(cells.end.astype("datetime64[s]"), unit="s", timezone="UTC")
    districts, inverse = np.unique(cols["district"].astype(str), return_inverse=True)
    inverse = inverse.reshape(-1)
    integral = cells.values == np.floor(cells.values)
    out = []
    for i, district in enumerate(districts.tolist()):
        idx = np.nonzero(inverse == i)[0]
        values = cells.values[idx]
        used = values.any(axis=0)
        counts = integral[idx].all(axis=0)
        first = idx[0]
        doc = {
            "schema_version": 1, "province": cols["province"][first], "city": cols["city"][first],
            "district": district, "writer": writer, "version": version,
            "cells": {
                "window": cells.window[idx].tolist(), "window_start": start[idx].tolist(), "window_end": end[idx].tolist(),
                "channel": cols["channel"][idx].tolist(), "business_line": cols["business_line"][idx].tolist(),
                "counters": {name: (values[:, j].astype(np.int64) if counts[j] else np.ascontiguousarray(values[:, j]))
                             for j, name in enumerate(COUNTERS) if used[j]},
            },
        }  # fmt: skip
        out.append((district.encode(), orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)))
    return out
