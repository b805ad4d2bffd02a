"""Idempotency: a resent event (same ``event_id``) counts once.

Upstream systems resend. :class:`SeenIds` remembers the event ids accepted
within a horizon, bounded in memory two ways: ids live in two generations that
rotate every half horizon (so an id is remembered for between half and a full
horizon), and the total never exceeds ``max_ids`` (the oldest generation is
dropped first). After a restart the worker warms it from ClickHouse, so events
redelivered after a crash are recognised too; ClickHouse's ReplacingMergeTree
is the backstop for anything older.

>>> seen = SeenIds(horizon_s=3600, max_ids=10, clock=lambda: 0.0)
>>> seen.add_new(["a", "b", "a", "c"])
[True, True, False, True]
>>> seen.add_new(["b", "d"])
[False, True]
>>> len(seen)
4
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class SeenIds:
    def __init__(self, horizon_s: float, max_ids: int, clock: Callable[[], float] = time.monotonic):
        self._half = horizon_s / 2
        self._max = max_ids
        self._clock = clock
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._rotated_at = clock()

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._current or event_id in self._previous

    def _rotate_if_due(self) -> None:
        now = self._clock()
        if now - self._rotated_at >= self._half:
            self._previous, self._current = self._current, set()
            self._rotated_at = now

    def add_new(self, event_ids: Iterable[str]) -> list[bool]:
        """Mark ids as seen; True where an id is new (also within the same batch)."""
        self._rotate_if_due()
        out = []
        for event_id in event_ids:
            if event_id in self._current or event_id in self._previous:
                out.append(False)
                continue
            # Each generation holds at most half the cap: a full one becomes the
            # previous generation and the oldest is dropped, never all at once.
            if len(self._current) >= max(1, self._max // 2):
                self._previous, self._current = self._current, set()
            if len(self._current) + len(self._previous) >= self._max:
                self._previous = set()
            self._current.add(event_id)
            out.append(True)
        return out

    def forget(self, event_ids: Iterable[str]) -> None:
        """Undo :meth:`add_new` for ids whose storage failed, so a retry is not mistaken for a resend."""
        for event_id in event_ids:
            self._current.discard(event_id)
            self._previous.discard(event_id)
