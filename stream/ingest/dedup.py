"""Idempotency: a resent event (same ``event_id``) counts once.

Upstream systems resend. :class:`SeenIds` remembers the event ids accepted
within a horizon, bounded in memory two ways: ids live in two generations that
rotate every half horizon (so an id is remembered for between half and a full
horizon), and the total never exceeds ``max_ids`` (the oldest generation is
dropped first). After a restart the worker warms it from ClickHouse, so events
redelivered after a crash are recognised too; ClickHouse's ReplacingMergeTree
is the backstop for anything older.

Millions of ids are held (a week of events), so each generation keeps its ids
as a set only until it has ``freeze_at`` of them; then they become a sorted
numpy array of their UTF-8 bytes, which a batch searches all at once: about
12 bytes for a 11-character id instead of about 90 for a string in a set. The
arrays are exact: a lookup compares whole ids, it never guesses from a hash.

>>> seen = SeenIds(horizon_s=3600, max_ids=10, clock=lambda: 0.0)
>>> seen.add_new(["a", "b", "a", "c"])
[True, True, False, True]
>>> seen.add_new(["b", "d"])
[False, True]
>>> len(seen)
4
>>> frozen = SeenIds(horizon_s=3600, max_ids=100, clock=lambda: 0.0, freeze_at=2)
>>> frozen.add_new(["a", "b"]), frozen.add_new(["c", "a", "b", "c"])  # "a" and "b" are in an array by now
([True, True], [True, False, False, False])
>>> frozen.forget(["a"]); frozen.add_new(["a", "a"])  # a failed store un-sees an id, even once frozen
[True, False]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

_END = b"\x01"  # ends every stored id: numpy's bytes arrays drop trailing NULs, so "a\x00" would equal "a"


def _encode(event_ids: Iterable[str]) -> np.ndarray:
    return np.array([e.encode() + _END for e in event_ids], dtype=np.bytes_)


#: ids are frozen by their length in bytes, up to each of these: an array is as wide as its longest id, so one
#: 128-character id must not widen the array of a million short ones
_WIDTHS = (16, 32, 64, 128, 1 << 16)


class _Generation:
    """The ids of one generation: recent ones in a set, the rest in sorted arrays (runs), by width."""

    __slots__ = ("recent", "runs", "frozen")

    def __init__(self) -> None:
        self.recent: set[str] = set()
        self.runs: dict[int, list[np.ndarray]] = {}  # width class -> its runs
        self.frozen = 0  # ids in the runs

    def __len__(self) -> int:
        return len(self.recent) + self.frozen

    def freeze(self) -> None:
        keys = _encode(self.recent)
        lengths = np.char.str_len(keys)
        lower = 0
        for width in _WIDTHS:
            inside = (lengths > lower) & (lengths <= width)
            lower = width
            if not inside.any():
                continue
            runs = self.runs.setdefault(width, [])
            runs.append(np.sort(keys[inside].astype(f"S{int(lengths[inside].max())}")))
            if len(runs) > 4:  # few runs to search: merge them (a sort of millions of short ids takes ~0.1 s)
                self.runs[width] = [np.sort(np.concatenate(runs))]
        self.frozen += len(self.recent)
        self.recent = set()

    def in_runs(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        for runs in self.runs.values():
            for run in runs:
                at = np.searchsorted(run, keys)
                at[at == len(run)] = 0
                found |= run[at] == keys
        return found


class SeenIds:
    def __init__(self, horizon_s: float, max_ids: int, clock: Callable[[], float] = time.monotonic,
                 freeze_at: int = 100_000):  # fmt: skip
        self._half = horizon_s / 2
        self._max = max_ids
        self._clock = clock
        self._freeze_at = freeze_at
        self._current = _Generation()
        self._previous = _Generation()
        self._unseen: set[str] = set()  # frozen ids that forget() took back
        self._rotated_at = clock()

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def __contains__(self, event_id: str) -> bool:
        return self._seen(event_id, bool(self._frozen_hits([event_id])[0]))

    def _seen(self, event_id: str, frozen_hit: bool) -> bool:
        return (frozen_hit and event_id not in self._unseen) or event_id in self._current.recent or (
            event_id in self._previous.recent
        )

    def _frozen_hits(self, event_ids: list[str]) -> np.ndarray:
        if not (self._current.frozen or self._previous.frozen):
            return np.zeros(len(event_ids), dtype=bool)
        keys = _encode(event_ids)
        return self._current.in_runs(keys) | self._previous.in_runs(keys)

    def _rotate_if_due(self) -> None:
        now = self._clock()
        if now - self._rotated_at >= self._half:
            self._previous, self._current = self._current, _Generation()
            self._rotated_at = now
            self._prune_unseen()

    def _prune_unseen(self) -> None:
        """Keep only the taken-back ids still in a run (those of a dropped generation are gone with it)."""
        if self._unseen:
            ids = list(self._unseen)
            self._unseen = {e for e, hit in zip(ids, self._frozen_hits(ids).tolist()) if hit}

    def add_new(self, event_ids: Iterable[str]) -> list[bool]:
        """Mark ids as seen; True where an id is new (also within the same batch)."""
        self._rotate_if_due()
        event_ids = list(event_ids)
        out = []
        half = max(1, self._max // 2)
        # Per id, what _seen and the caps below do, with the generations and their sizes in locals (~1 µs per
        # event less); a rotation inside the loop refreshes them.
        current, previous, unseen = self._current, self._previous, self._unseen
        held, held_before = len(current), len(previous)
        for event_id, frozen_hit in zip(event_ids, self._frozen_hits(event_ids).tolist()):
            if (frozen_hit and event_id not in unseen) or event_id in current.recent or event_id in previous.recent:
                out.append(False)
                continue
            # Each generation holds at most half the cap: a full one becomes the
            # previous generation and the oldest is dropped, never all at once.
            if held >= half:
                self._previous, self._current = current, _Generation()
                self._prune_unseen()
                current, previous, unseen = self._current, self._previous, self._unseen
                held, held_before = 0, len(previous)
            if held + held_before >= self._max:
                self._previous = previous = _Generation()
                self._prune_unseen()
                unseen, held_before = self._unseen, 0
            if unseen:
                unseen.discard(event_id)
            current.recent.add(event_id)
            held += 1
            out.append(True)
        if len(current.recent) >= self._freeze_at:
            current.freeze()
        return out

    def forget(self, event_ids: Iterable[str]) -> None:
        """Undo :meth:`add_new` for ids whose storage failed, so a retry is not mistaken for a resend."""
        event_ids = list(event_ids)
        for event_id, frozen_hit in zip(event_ids, self._frozen_hits(event_ids).tolist()):
            self._current.recent.discard(event_id)
            self._previous.recent.discard(event_id)
            if frozen_hit:
                self._unseen.add(event_id)
