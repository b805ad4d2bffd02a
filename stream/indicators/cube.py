"""The indicator cube: one worker's counters per (window, window start, cell).

Pure and synchronous. Three layers keep it cheap:

1. **Per batch**, facts are summed per ``(bucket, cell)``, where a
   bucket is the greatest common divisor of all window sizes and steps (5 min
   with the default windows): a batch touches each bucket once, not once per
   event and window.
2. **Tumbling windows** are kept as cells; buckets are folded into them at
   :meth:`Cube.flush`.
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
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from ..topology import WindowSpec
from .counters import add_dense, add_sparse, zeros
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
        self.cells: dict[CellKey, list[float]] = {}  # tumbling cells
        self.dirty: set[CellKey] = set()  # tumbling cells changed since the last flush
        self.pending: dict[tuple[int, Cell], list[float]] = {}  # (bucket epoch, cell) -> counters
        self.marks: dict[tuple[str, int], datetime] = {}  # (topic, partition) -> newest event time seen
        self.watermark: datetime | None = None
        self._current_end: dict[str, int] = {}  # rolling window -> end of the newest window published as current
        self._layers = {r.layer.name for r in self.rolling}
        self._evicted_at: int | None = None
        # (layer, cell) -> {start epoch: counters}: the cells a rolling sum reads, by cell
        self._layer_index: dict[tuple[str, Cell], dict[int, list[float]]] = {}
        self._times: dict[int, datetime] = {}

    # -- time ----------------------------------------------------------------------------
    def advance(self, event_time: datetime, source: tuple[str, int]) -> None:
        """Note a source partition's event time; the watermark is the oldest partition's newest time."""
        mark = self.marks.get(source)
        if mark is None or event_time > mark:
            self.marks[source] = event_time
            self.watermark = min(self.marks.values())

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        lost = set(partitions)
        for source in [s for s in self.marks if s[1] in lost]:
            del self.marks[source]
        self.watermark = min(self.marks.values()) if self.marks else None

    def _final_before(self) -> int | None:
        """Windows ending at or before this epoch second are final."""
        return None if self.watermark is None else _epoch(self.watermark) - self._late_s

    def _time(self, epoch: int) -> datetime:
        t = self._times.get(epoch)
        if t is None:
            if len(self._times) > 200_000:
                self._times.clear()
            t = self._times[epoch] = _EPOCH + timedelta(seconds=epoch)
        return t

    # -- adding facts --------------------------------------------------------------------
    def add(self, facts: Iterable[Fact], source: str, sign: float = 1.0, kind: str = "ticket") -> list[TooLate]:
        """Add (sign 1) or retract (sign -1) facts; returns those too late for a window that is final."""
        late: list[TooLate] = []
        final_before = self._final_before()
        pending, bucket = self.pending, self.bucket
        for x, cell, counters in facts:
            b = x - x % bucket
            if final_before is not None and b + bucket <= final_before:
                late += self._add_to_final_range(x, b, cell, counters, sign, source, kind, final_before)
                continue
            into = pending.get((b, cell))
            if into is None:
                into = pending[(b, cell)] = zeros()
            for i, v in counters:
                into[i] += sign * v
        return late

    def _add_to_final_range(self, x, b, cell, counters, sign, source, kind, final_before) -> list[TooLate]:
        """Slow path: some windows containing time ``x`` are final; apply to the others, report the rest."""
        late = []
        t = self._time(x)
        for w in self.tumbling.values():
            start = b - b % w.size
            if start + w.size <= final_before:
                if sign > 0:
                    late.append(TooLate(kind, source, t, w.name, self._time(start), cell.district))
                continue
            key = CellKey(w.name, self._time(start), self._time(start + w.size), cell)
            self._bump(key, add_sparse(zeros(), counters, sign))
        for r in self.rolling:
            # Rolling windows are sums of their layer: report the final ones that contain t.
            last = b - b % r.step
            for start in range(last - r.size + r.step, last + 1, r.step):
                if start + r.size <= final_before and sign > 0:
                    late.append(TooLate(kind, source, t, r.name, self._time(start), cell.district))
        return late

    def _bump(self, key: CellKey, counters: list[float]) -> None:
        into = self.cells.get(key)
        if into is None:
            into = self.cells[key] = list(counters)
            if key.window in self._layers:
                self._layer_index.setdefault((key.window, key.cell), {})[_epoch(key.start)] = into
        else:
            add_dense(into, counters)
        self.dirty.add(key)

    # -- output --------------------------------------------------------------------------
    def flush(self) -> list[tuple[CellKey, list[float]]]:
        """Cells changed since the last flush, tumbling and rolling; cells no longer needed leave memory."""
        for (b, cell), counters in self.pending.items():
            for w in self.tumbling.values():
                start = b - b % w.size
                self._bump(CellKey(w.name, self._time(start), self._time(start + w.size), cell), counters)
        self.pending.clear()
        out = [(k, list(self.cells[k])) for k in self.dirty]
        out += self._rolling_changes()
        self.dirty.clear()
        self._evict()
        return out

    def _rolling_changes(self) -> list[tuple[CellKey, list[float]]]:
        if not self.rolling or self.watermark is None:
            return []
        wm = _epoch(self.watermark)
        final_before = wm - self._late_s
        out = []
        for r in self.rolling:
            layer = r.layer.name
            current_end = wm - wm % r.step + r.step  # the window ending at the next step boundary is current
            todo: set[tuple[int, Cell]] = set()
            # Windows containing a changed layer cell that are current or past but not final:
            # final_before < start + size <= current_end, and start <= s < start + size.
            lo_bound = final_before - r.size + 1
            hi_bound = current_end - r.size
            for k in self.dirty:
                if k.window != layer:
                    continue
                s = _epoch(k.start)
                lo = max(s - r.size + r.step, lo_bound)
                lo += (-lo) % r.step  # round up to a window start
                for start in range(lo, min(s, hi_bound) + 1, r.step):
                    todo.add((start, k.cell))
            prev = self._current_end.get(r.name)
            if prev != current_end:
                # Windows that became current or past since the last flush (a replay batch can
                # move the watermark by hours): publish each for every cell with data in it.
                after = final_before if prev is None or prev > current_end else max(prev, final_before)
                for k in self.cells:
                    if k.window != layer:
                        continue
                    s = _epoch(k.start)
                    lo = max(s + r.step, after + 1)  # window ends in (after, current_end] that contain s
                    lo += (-lo) % r.step
                    for end in range(lo, min(s + r.size, current_end) + 1, r.step):
                        todo.add((end - r.size, k.cell))
                self._current_end[r.name] = current_end
            for start, cell in todo:
                total = zeros()
                series = self._layer_index.get((layer, cell), {})
                for s in range(start, start + r.size, r.step):
                    part = series.get(s)
                    if part is not None:
                        add_dense(total, part)
                out.append((CellKey(r.name, self._time(start), self._time(start + r.size), cell), total))
        return out

    def _evict(self) -> None:
        final_before = self._final_before()
        # Cells become evictable a bucket at a time: scan only when the watermark crossed one.
        if final_before is None or final_before // self.bucket == self._evicted_at:
            return
        self._evicted_at = final_before // self.bucket
        gone = [
            k for k in self.cells
            if _epoch(k.end) + self.tumbling[k.window].retention <= final_before
        ]  # fmt: skip
        for k in gone:
            del self.cells[k]
            series = self._layer_index.get((k.window, k.cell))
            if series is not None:
                series.pop(_epoch(k.start), None)
                if not series:
                    del self._layer_index[(k.window, k.cell)]
