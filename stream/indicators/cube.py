"""The indicator cube: one worker's counters per (window, window start, cell).

Pure and synchronous. Three layers keep it cheap:

1. **Per batch**, facts are summed per ``(bucket, cell)``, where a
   bucket is the greatest common divisor of all window sizes and steps (5 min
   with the default windows): a batch touches each bucket once, not once per
   event and window.
2. **Tumbling windows** are kept as rows of one numpy matrix (a row per window,
   start and cell); buckets are folded into them at :meth:`Cube.flush` with
   vectorised sums, and the output leaves as columns, not per-cell objects.
3. **Rolling windows** (``size`` long, starting every ``step``) are sums of the
   tumbling window whose size is their step (24 h = 24 hourly cells), computed
   at flush for the windows that are *current* (ending within one step of the
   watermark) or already past and still correctable. Windows further ahead are
   partial and not published until they become current.

A window stays correctable until its end plus the allowed lateness falls behind
the watermark; a fact for a final window is *too late*: not applied, returned so
the caller counts and records it. The watermark is the *oldest* of the source
partitions' newest event times (per topic and partition): a batch may carry one
partition's whole backlog before another's, and the slower partition's windows
must stay open. The counters are this worker's partial: cells of several
workers (and of earlier runs) add up to the exact value (docs/indicators.md).

>>> from datetime import datetime, timedelta, timezone
>>> from stream.indicators.facts import Cell
>>> from stream.indicators.counters import sparse
>>> from stream.topology import WindowSpec
>>> cube = Cube([WindowSpec(name="1h", kind="tumbling", size="1h")], lateness=timedelta(minutes=10))
>>> t = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
>>> cell = Cell("P", "C", "D", "hotline", "mobile")
>>> cube.add([(int(t.timestamp()), cell, sparse(complaints=1))], source="T-1")
[]
>>> cube.advance(t, ("tickets", 0))
>>> [(k.window, k.start.hour, v[0]) for k, v in cube.flush()]
[('1h', 9, 1.0)]
>>> cube.advance(t + timedelta(hours=2), ("tickets", 0))   # 09:00-10:00 is final 10 min after 10:00
>>> [late.window for late in cube.add([(int(t.timestamp()), cell, sparse(complaints=1))], source="T-2")]
['1h']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import numpy as np

from ..topology import WindowSpec
from .counters import WIDTH, add_sparse, zeros
from .facts import Cell, Fact

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _epoch(t: datetime) -> int:
    return int(t.timestamp() // 1)  # times are timezone-aware (the contracts require offsets)


class CellKey(NamedTuple):
    window: str
    start: datetime
    end: datetime
    cell: Cell


class TooLate(NamedTuple):
    kind: str  # 'satisfaction' (an event) or 'ticket' (a change of a ticket's state)
    source: str  # event id or ticket id
    fact_time: datetime
    window: str
    start: datetime
    district: str


class _Tumbling:
    def __init__(self, spec: WindowSpec, retention: int):
        self.name = spec.name
        self.size = int(spec.size.total_seconds())
        self.retention = retention  # seconds after its end a cell stays in memory (rolling sums read it)


class _Rolling:
    def __init__(self, spec: WindowSpec, layer: _Tumbling):
        self.name = spec.name
        self.size = int(spec.size.total_seconds())
        self.step = int(spec.hop.total_seconds())
        self.layer = layer  # the tumbling window of size == step


_CELL_BITS = 24  # cell ids are interned ints below 2**24; a (start, cell) pair packs into one int64


@dataclass
class Columns:
    """The cells a flush changed, column-wise (what storage and publishing consume)."""

    window: np.ndarray  # object: window names
    start: np.ndarray  # int64 epoch seconds
    end: np.ndarray  # int64 epoch seconds
    cell: np.ndarray  # int64 interned cell ids (see :meth:`Cube.cell_of`)
    values: np.ndarray  # float64, one row per cell, counters in COUNTERS order

    def __len__(self) -> int:
        return len(self.start)


class _Rows:
    """Tumbling cells as rows: (window index, start, cell id) -> row of a counters matrix."""

    def __init__(self, capacity: int = 4096):
        self.index: dict[tuple[int, int, int], int] = {}
        self.win = np.zeros(capacity, np.int16)
        self.start = np.zeros(capacity, np.int64)
        self.cell = np.zeros(capacity, np.int64)
        self.vals = np.zeros((capacity, WIDTH))
        self.used = np.zeros(capacity, bool)
        self.free: list[int] = []
        self.n = 0

    def row(self, win: int, start: int, cell: int) -> int:
        key = (win, start, cell)
        r = self.index.get(key)
        if r is not None:
            return r
        if self.free:
            r = self.free.pop()
        else:
            if self.n == len(self.start):
                self._grow()
            r = self.n
            self.n += 1
        self.index[key] = r
        self.win[r], self.start[r], self.cell[r], self.used[r] = win, start, cell, True
        self.vals[r] = 0.0
        return r

    def _grow(self) -> None:
        cap = 2 * len(self.start)
        for name in ("win", "start", "cell", "used"):
            old = getattr(self, name)
            new = np.zeros(cap, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        vals = np.zeros((cap, WIDTH))
        vals[: len(self.vals)] = self.vals
        self.vals = vals

    def remove(self, rows: np.ndarray) -> None:
        for r in rows.tolist():
            del self.index[(int(self.win[r]), int(self.start[r]), int(self.cell[r]))]
            self.used[r] = False
            self.free.append(r)


class Cube:
    def __init__(self, windows: Sequence[WindowSpec], lateness: timedelta):
        self.lateness = lateness
        self._late_s = int(lateness.total_seconds())
        by_size = {int(w.size.total_seconds()): w for w in windows if w.kind == "tumbling"}
        self.tumbling: dict[str, _Tumbling] = {}
        for w in windows:
            if w.kind == "tumbling":
                keep = max(
                    [int(r.size.total_seconds()) for r in windows
                     if r.kind == "rolling" and int(r.hop.total_seconds()) == int(w.size.total_seconds())] or [0]
                )  # fmt: skip
                self.tumbling[w.name] = _Tumbling(w, keep)
        self.rolling: list[_Rolling] = []
        for w in windows:
            if w.kind == "rolling":
                layer = by_size.get(int(w.hop.total_seconds()))
                if layer is None:
                    raise ValueError(f"rolling window {w.name}: no tumbling window of its step ({w.hop}) to sum")
                self.rolling.append(_Rolling(w, self.tumbling[layer.name]))
        self.bucket = math.gcd(*[int(w.size.total_seconds()) for w in windows], *[r.step for r in self.rolling])
        self._tumbling = list(self.tumbling.values())
        self._win_of = {w.name: i for i, w in enumerate(self._tumbling)}
        self._names = np.array([w.name for w in self._tumbling] + [r.name for r in self.rolling], dtype=object)
        self._sizes = np.array([w.size for w in self._tumbling], np.int64)
        self._keep = np.array([w.retention for w in self._tumbling], np.int64)
        self.rows = _Rows()
        self.dirty: set[int] = set()  # rows changed since the last flush
        self.pending: dict[tuple[int, int], list[float]] = {}  # (bucket epoch, cell id) -> counters
        self._pending_arrays: list[tuple[np.ndarray, np.ndarray]] = []  # (keys n×2, counters n×W), see add_columns
        self.marks: dict[tuple[str, int], datetime] = {}  # (topic, partition) -> newest event time seen
        self.watermark: datetime | None = None
        self._current_end: dict[str, int] = {}  # rolling window -> end of the newest window published as current
        self._evicted_at: int | None = None
        self._cell_ids: dict[Cell, int] = {}
        self.cells_by_id: list[Cell] = []

    # -- cells ---------------------------------------------------------------------------
    def cell_id(self, cell: Cell) -> int:
        """The cell's interned id (see :meth:`cell_of`)."""
        i = self._cell_ids.get(cell)
        if i is None:
            i = self._cell_ids[cell] = len(self.cells_by_id)
            self.cells_by_id.append(cell)
        return i

    def cell_of(self, cell_id: int) -> Cell:
        return self.cells_by_id[cell_id]

    # -- time ----------------------------------------------------------------------------
    def advance(self, event_time: datetime, source: tuple[str, int]) -> None:
        """Note a source partition's event time; the watermark is the oldest partition's newest time."""
        mark = self.marks.get(source)
        if mark is None or event_time > mark:
            self.marks[source] = event_time
            self._rewatermark()

    def sources(self, assigned: Iterable[tuple[str, int]], idle: Iterable[tuple[str, int]]) -> None:
        """The source partitions the worker reads, and those with nothing left to read (caught up).

        A partition that still has records to read but none seen yet holds the watermark back: otherwise
        the partitions read first would carry it ahead and the other partitions' events would be judged
        too late (a replay, a worker catching up). A caught-up partition does not hold it (an idle one
        would stop it for good).
        """
        self._assigned = set(assigned)
        self._idle = set(idle)
        self._rewatermark()

    def _rewatermark(self) -> None:
        assigned = getattr(self, "_assigned", None)
        if assigned is None:  # not told: every partition seen so far counts
            if self.marks:
                self.watermark = min(self.marks.values())
            return
        active = [s for s in assigned if s not in self._idle]
        if any(s not in self.marks for s in active):
            return  # held: a partition with records to read has not been seen yet
        marks = [self.marks[s] for s in active]
        if marks:
            newest = min(marks)
            if self.watermark is None or newest > self.watermark:
                self.watermark = newest

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        lost = set(partitions)
        for source in [s for s in self.marks if s[1] in lost]:
            del self.marks[source]
        self.watermark = min(self.marks.values()) if self.marks else None

    def _final_before(self) -> int | None:
        """Windows ending at or before this epoch second are final."""
        return None if self.watermark is None else _epoch(self.watermark) - self._late_s

    # -- adding facts --------------------------------------------------------------------
    def add(self, facts: Iterable[Fact], source: str, sign: float = 1.0, kind: str = "ticket") -> list[TooLate]:
        """Add (sign 1) or retract (sign -1) facts; returns those too late for a window that is final."""
        late: list[TooLate] = []
        final_before = self._final_before()
        pending, bucket = self.pending, self.bucket
        for x, cell, counters in facts:
            b = x - x % bucket
            c = self.cell_id(cell)
            if final_before is not None and b + bucket <= final_before:
                late += self._add_to_final_range(x, b, c, cell, counters, sign, source, kind, final_before)
                continue
            into = pending.get((b, c))
            if into is None:
                into = pending[(b, c)] = zeros()
            for i, v in counters:
                into[i] += sign * v
        return late

    def add_columns(
        self, times: np.ndarray, cells: list[Cell], counters: np.ndarray, sources: list[str], kind: str
    ) -> list[TooLate]:
        """:meth:`add` for many facts at once, given as columns (one row per fact; used for satisfaction events)."""
        if not len(times):
            return []
        ids = np.fromiter((self.cell_id(c) for c in cells), np.int64, len(cells))
        buckets = times - times % self.bucket
        final_before = self._final_before()
        late: list[TooLate] = []
        if final_before is not None:
            slow = np.nonzero(buckets + self.bucket <= final_before)[0]
            for i in slow.tolist():
                pairs = tuple((j, float(v)) for j, v in enumerate(counters[i]) if v)
                late += self._add_to_final_range(int(times[i]), int(buckets[i]), int(ids[i]), cells[i], pairs, 1.0,
                                                 sources[i], kind, final_before)  # fmt: skip
            if len(slow):
                keep = np.ones(len(times), bool)
                keep[slow] = False
                buckets, ids, counters = buckets[keep], ids[keep], counters[keep]
        self._pending_arrays.append((np.stack([buckets, ids], axis=1), counters))
        return late

    def _add_to_final_range(self, x, b, c, cell, counters, sign, source, kind, final_before) -> list[TooLate]:
        """Slow path: some windows containing time ``x`` are final; apply to the others, report the rest."""
        late = []
        t = _EPOCH + timedelta(seconds=x)
        dense = np.array(add_sparse(zeros(), counters, sign))
        for wi, w in enumerate(self._tumbling):
            start = b - b % w.size
            if start + w.size <= final_before:
                if sign > 0:
                    late.append(TooLate(kind, source, t, w.name, _EPOCH + timedelta(seconds=start), cell.district))
                continue
            r = self.rows.row(wi, start, c)
            self.rows.vals[r] += dense
            self.dirty.add(r)
        # A rolling window is the sum of its step's tumbling cells: a fact too late for that cell
        # (reported above, e.g. for its hour) is too late for every rolling window containing it.
        return late

    # -- output --------------------------------------------------------------------------
    def flush_columns(self) -> Columns:
        """Cells changed since the last flush, tumbling and rolling, as columns; cells no longer needed leave memory."""
        rows = self.rows
        if self.pending or self._pending_arrays:
            parts = self._pending_arrays
            if self.pending:
                parts.append((np.array(list(self.pending.keys()), np.int64).reshape(-1, 2),
                              np.array(list(self.pending.values()))))  # fmt: skip
            keys = np.concatenate([k for k, _ in parts])
            vals = np.concatenate([v for _, v in parts])
            self.pending.clear()
            self._pending_arrays = []
            for wi, size in enumerate(self._sizes.tolist()):
                packed = ((keys[:, 0] - keys[:, 0] % size) << _CELL_BITS) | keys[:, 1]
                uniq, inv = np.unique(packed, return_inverse=True)
                agg = np.zeros((len(uniq), WIDTH))
                np.add.at(agg, inv.reshape(-1), vals)
                mask = (1 << _CELL_BITS) - 1
                target = np.fromiter(
                    (rows.row(wi, u >> _CELL_BITS, u & mask) for u in uniq.tolist()), np.int64, len(uniq)
                )
                rows.vals[target] += agg
                self.dirty.update(target.tolist())
        dirty = np.fromiter(self.dirty, np.int64, len(self.dirty))
        self.dirty.clear()
        win = rows.win[dirty].astype(np.int64)
        start = rows.start[dirty]
        out = Columns(self._names[win], start, start + self._sizes[win], rows.cell[dirty], rows.vals[dirty].copy())
        rolled = self._rolling_changes(dirty)
        self._evict()
        if rolled is None:
            return out
        return Columns(*(np.concatenate([a, b]) for a, b in zip(
            (out.window, out.start, out.end, out.cell, out.values),
            (rolled.window, rolled.start, rolled.end, rolled.cell, rolled.values))))  # fmt: skip

    def flush(self) -> list[tuple[CellKey, list[float]]]:
        """:meth:`flush_columns` as ``(CellKey, counters)`` pairs (for tests and small uses)."""
        c = self.flush_columns()
        t = lambda x: _EPOCH + timedelta(seconds=int(x))  # noqa: E731
        pairs = [
            (CellKey(c.window[i], t(c.start[i]), t(c.end[i]), self.cells_by_id[int(c.cell[i])]), c.values[i].tolist())
            for i in range(len(c))
        ]
        return sorted(pairs, key=lambda kv: (kv[0].window, kv[0].start, kv[0].cell))

    def _rolling_changes(self, dirty: np.ndarray) -> Columns | None:
        """Rolling windows to publish, summed from their layer's cells (vectorised).

        A window is published when a cell of its layer changed and it is current
        or past but not final, and once when it becomes current (or is passed by
        a watermark jump) for every cell with data in it.
        """
        if not self.rolling or self.watermark is None:
            return None
        rows = self.rows
        n = rows.n
        wm = _epoch(self.watermark)
        final_before = wm - self._late_s
        mask = (1 << _CELL_BITS) - 1
        parts = []
        for ri, r in enumerate(self.rolling):
            li = self._win_of[r.layer.name]
            step, size = r.step, r.size
            current_end = wm - wm % step + step  # the window ending at the next step boundary is current
            live = np.nonzero(rows.used[:n] & (rows.win[:n] == li))[0]
            if not len(live):
                continue
            ends: list[np.ndarray] = []
            cells: list[np.ndarray] = []

            def windows_containing(s_arr, c_arr, first_end, last_end):
                """Ends e in [first_end, last_end] of the windows containing each start s: s < e <= s + size."""
                lo = np.maximum(s_arr + step, first_end)
                lo = lo + (-lo) % step
                hi = np.minimum(s_arr + size, last_end)
                k = np.maximum((hi - lo) // step + 1, 0)
                total = int(k.sum())
                if total:
                    offsets = np.arange(total) - np.repeat(np.cumsum(k) - k, k)
                    ends.append(np.repeat(lo, k) + offsets * step)
                    cells.append(np.repeat(c_arr, k))

            sel = dirty[rows.win[dirty] == li]
            windows_containing(rows.start[sel], rows.cell[sel], final_before + 1, current_end)
            prev = self._current_end.get(r.name)
            if prev != current_end:
                # also those already final by now: each window is published at least once
                after = final_before if prev is None else min(prev, current_end)
                windows_containing(rows.start[live], rows.cell[live], after + 1, current_end)
                self._current_end[r.name] = current_end
            if not ends:
                continue
            todo = np.unique(((np.concatenate(ends) - size) << _CELL_BITS) | np.concatenate(cells))
            starts, cell_ids = todo >> _CELL_BITS, todo & mask
            # Sum each window's layer cells: look the (start, cell) keys up in the sorted layer keys.
            keys = (rows.start[live] << _CELL_BITS) | rows.cell[live]
            order = np.argsort(keys)
            keys, layer_rows = keys[order], live[order]
            offsets = np.arange(size // step, dtype=np.int64) * step
            sums = np.empty((len(todo), WIDTH))
            for lo in range(0, len(todo), 2048):  # bounded memory: 2048 windows x cells x counters
                want = ((starts[lo : lo + 2048, None] + offsets[None, :]) << _CELL_BITS) | cell_ids[lo : lo + 2048, None]
                pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
                found = keys[pos] == want
                sums[lo : lo + 2048] = (rows.vals[layer_rows[pos]] * found[..., None]).sum(axis=1)
            parts.append((len(self._tumbling) + ri, starts, size, cell_ids, sums))
        if not parts:
            return None
        return Columns(
            self._names[np.concatenate([np.full(len(p[1]), p[0]) for p in parts])],
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[1] + p[2] for p in parts]),
            np.concatenate([p[3] for p in parts]),
            np.concatenate([p[4] for p in parts]),
        )

    def _evict(self) -> None:
        final_before = self._final_before()
        # Cells become evictable a bucket at a time: scan only when the watermark crossed one.
        if final_before is None or final_before // self.bucket == self._evicted_at:
            return
        self._evicted_at = final_before // self.bucket
        rows = self.rows
        n = rows.n
        win = rows.win[:n].astype(np.int64)
        gone = np.nonzero(rows.used[:n] & (rows.start[:n] + self._sizes[win] + self._keep[win] <= final_before))[0]
        rows.remove(gone)
