"""The indicator cube: counters per (window, window start, cell, source partition).

Pure and synchronous. Facts are added (or retracted) into every window that
contains their time; a window stays correctable until its end plus the
allowed lateness falls behind the watermark, after
which a fact for it is *too late*: not applied, but returned so the caller can
count and record it. :meth:`Cube.flush` hands back the cells changed since the
last flush (the batch's output) and drops final cells from memory.

The watermark is the *oldest* of the source partitions' newest event times
(per topic and partition): a batch may carry one partition's whole backlog
before another's, and the slower partition's windows must stay open for it.

Counters are kept per source partition, so workers never share a cell: every
roll-up and every merge across workers is an exact sum (docs/indicators.md).

>>> from datetime import datetime, timedelta, timezone
>>> from stream.indicators.facts import Cell
>>> from stream.indicators.counters import vector
>>> from stream.topology import WindowSpec
>>> cube = Cube([WindowSpec(name="1h", kind="tumbling", size="1h")], lateness=timedelta(minutes=10))
>>> t = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
>>> cell = Cell("P", "C", "D", "hotline", "mobile")
>>> cube.advance(t, ("tickets", 0))
>>> cube.add([(t, cell, vector(complaints=1))], partition=0, source="T-1")
[]
>>> [(k.window, k.start.hour, v[0]) for k, v in cube.flush()]
[('1h', 9, 1.0)]
>>> cube.advance(t + timedelta(hours=2), ("tickets", 0))   # 09:00-10:00 is final 10 min after 10:00
>>> [late.window for late in cube.add([(t, cell, vector(complaints=1))], partition=0, source="T-2")]
['1h']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from ..topology import WindowSpec
from .counters import zeros
from .facts import Cell, Fact

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class CellKey(NamedTuple):
    window: str
    start: datetime
    end: datetime
    cell: Cell
    partition: int


class TooLate(NamedTuple):
    kind: str  # 'satisfaction' (an event) or 'ticket' (a change of a ticket's state)
    source: str  # event id or ticket id
    fact_time: datetime
    window: str
    start: datetime
    district: str


class _Window:
    """Window arithmetic on epoch seconds (tumbling windows are rolling ones with step == size)."""

    def __init__(self, spec: WindowSpec):
        self.name = spec.name
        self.size = int(spec.size.total_seconds())
        self.step = int(spec.hop.total_seconds())
        self.span = timedelta(seconds=self.size)

    def starts(self, t: datetime) -> range:
        """Epoch seconds of every window start whose window contains ``t``."""
        x = int((t - _EPOCH).total_seconds() // 1)
        last = x - x % self.step
        return range(last - self.size + self.step, last + 1, self.step)


class Cube:
    def __init__(self, windows: Sequence[WindowSpec], lateness: timedelta):
        self.windows = [_Window(w) for w in windows]
        self.lateness = lateness
        self.cells: dict[CellKey, list[float]] = {}
        self.dirty: set[CellKey] = set()
        self.marks: dict[tuple[str, int], datetime] = {}  # (topic, partition) -> newest event time seen
        self.watermark: datetime | None = None
        self._start_cache: dict[int, datetime] = {}

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

    def is_final(self, end: datetime) -> bool:
        return self.watermark is not None and end + self.lateness <= self.watermark

    def _start(self, epoch: int) -> datetime:
        start = self._start_cache.get(epoch)
        if start is None:
            if len(self._start_cache) > 100_000:
                self._start_cache.clear()
            start = self._start_cache[epoch] = _EPOCH + timedelta(seconds=epoch)
        return start

    # -- counters ------------------------------------------------------------------------
    def keys_for(self, t: datetime, cell: Cell, partition: int) -> Iterable[CellKey]:
        for w in self.windows:
            for epoch in w.starts(t):
                start = self._start(epoch)
                yield CellKey(w.name, start, start + w.span, cell, partition)

    def add(
        self, facts: Iterable[Fact], partition: int, source: str, sign: float = 1.0, kind: str = "ticket"
    ) -> list[TooLate]:
        """Add (sign 1) or retract (sign -1) facts; returns those that came too late for a final window."""
        late: list[TooLate] = []
        cells, dirty = self.cells, self.dirty
        for t, cell, counters in facts:
            for key in self.keys_for(t, cell, partition):
                if self.is_final(key.end):
                    if sign > 0:
                        late.append(TooLate(kind, source, t, key.window, key.start, cell.district))
                    continue
                into = cells.get(key)
                if into is None:
                    into = cells[key] = zeros()
                for i, v in enumerate(counters):
                    if v:
                        into[i] += sign * v
                dirty.add(key)
        return late

    def load(self, key: CellKey, counters: list[float]) -> None:
        """A cell's stored partial, brought back from ClickHouse before it is changed again."""
        self.cells[key] = list(counters)

    def flush(self) -> list[tuple[CellKey, list[float]]]:
        """Cells changed since the last flush (to store and publish); final cells then leave memory."""
        out = [(k, self.cells[k]) for k in sorted(self.dirty, key=lambda k: (k.window, k.start, k.cell, k.partition))]
        self.dirty.clear()
        if self.watermark is not None:
            final = [k for k in self.cells if self.is_final(k.end)]
            for k in final:
                del self.cells[k]
        return out
