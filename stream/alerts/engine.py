"""The alert engine: indicator windows per rule scope, and each rule's alert lifecycle.

Pure and synchronous. It is fed the indicator cells the indicator stage publishes: one writer's
partial counters of one ``(window, start, district, channel, business_line)`` cell, the newest
version replacing the writer's previous one, so the sum over writers is the cell's value whatever
the number of workers. Each rule aggregates the cells of its window into its scope (district, city,
province or network, optionally split by channel or business line) incrementally, by deltas.

A rule judges each window instance of each scope key whose volume (the indicator's denominator)
reaches ``min_volume``; the still-filling newest window is judged too, so an incident fires within
the window it starts in. The lifecycle of one rule and scope key (its *fingerprint*):

- ``pending``: the newest judged windows breach, fewer than ``for`` in a row;
- ``firing``: ``for`` judged windows in a row breach; ``since`` is the start of the first of them;
- ``resolved``: while firing, the newest ``keep_firing_for`` complete judged windows are clear: beyond
  the threshold by ``hysteresis`` on the good side (an indicator hovering at the threshold stays firing);
  a window is complete once a later one has data;
- ``inactive``: a pending alert whose breach did not last;
- ``predicted`` / ``unpredicted``: a trend warning (rules with ``forecast``): river's Holt-Winters on the
  completed windows forecasts a crossing within ``forecast.horizon`` windows while the rule is not
  yet pending or firing; withdrawn when the forecast no longer crosses or the rule breaches.

A transition is emitted once; the same input again (a redelivered batch, a restored state) emits
nothing, so delivery is free of duplicates.

>>> from stream.topology import AlertRule, WindowSpec
>>> from stream.indicators.counters import INDEX, WIDTH
>>> rule = AlertRule.model_validate({"name": "sat_drop", "indicator": "sat_mean", "scope": "district",
...     "window": "1h", "comparator": "<", "threshold": 7.0, "min_volume": 10, "for": 2, "severity": "warning"})
>>> engine = AlertEngine([rule], {"1h": WindowSpec(name="1h", kind="tumbling", size="1h")})
>>> def cell(hour, n, mean):
...     row = np.zeros(WIDTH); row[INDEX["sat_n"]], row[INDEX["sat_sum"]] = n, n * mean
...     return CellUpdate("1h", hour * 3600, (hour + 1) * 3600, "P1", "C1", "D1", "hotline", "", 1, row)
>>> [t.status for t in engine.apply([cell(0, 20, 8.1)])]
[]
>>> [t.status for t in engine.apply([cell(1, 20, 6.2)])], [t.status for t in engine.apply([cell(2, 20, 6.0)])]
(['pending'], ['firing'])
>>> t = engine.alerts()[0]; t.since, round(t.value, 1), t.labels["district"]
(3600, 6.0, 'D1')
>>> [t.status for t in engine.apply([cell(2, 20, 6.0)])]  # the same input again: nothing new
[]
>>> [t.status for t in engine.apply([cell(3, 20, 7.5)])]  # hour 3 is still filling
[]
>>> [t.status for t in engine.apply([cell(4, 2, 7.5)])]  # now it is complete (hour 4: too few responses)
['resolved']
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from river import time_series

from ..indicators import formulas
from ..indicators.counters import WIDTH
from ..topology import AlertRule, WindowSpec

_CMP: dict[str, Callable[[float, float], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_HISTORY = 400  # completed window values kept per rule and key (percent baselines, forecasts)
_WEEK = 7 * 86400


@dataclass(frozen=True, slots=True)
class CellUpdate:
    """One writer's partial counters of one cell of one window instance (epoch seconds)."""

    window: str
    start: int
    end: int
    province: str
    city: str
    district: str
    channel: str
    business_line: str
    writer: int
    values: np.ndarray  # WIDTH counters


class CellColumns(NamedTuple):
    """Many cell updates as columns (one row each): what :meth:`AlertEngine.apply_columns` takes."""

    window: np.ndarray  # object: window names
    start: np.ndarray  # int64 epoch seconds
    cell: list[tuple]  # (province, city, district, channel, business_line) per row
    writer: np.ndarray  # int64
    values: np.ndarray  # float64, rows x WIDTH counters


_SCOPE_BITS = 24  # a (window start, scope key id) pair packs into one int64
_SCOPE_MASK = (1 << _SCOPE_BITS) - 1


@dataclass(frozen=True)
class Transition:
    """A change of one alert's status: what goes to the topic, ClickHouse and on-call."""

    rule: AlertRule
    fingerprint: str
    status: str  # pending | firing | resolved | inactive | predicted | unpredicted
    labels: dict[str, str]  # scope labels: province, city, district, channel, business_line (as the scope has them)
    value: float | None
    threshold: float
    baseline: float | None  # change rules: the baseline the value is compared with
    volume: float
    window_start: int  # the window instance judged (epoch s)
    window_end: int
    since: int  # start of the first breaching window of this episode (epoch s)
    predicted_value: float | None = None  # predicted: the forecast value at the crossing
    predicted_window_start: int | None = None  # predicted: the window in which the crossing is forecast


@dataclass
class _Instance:
    value: float | None
    volume: float
    verdict: bool | None  # breach; None: not judged (too little volume, or no baseline yet)
    clear: bool  # beyond the threshold by the hysteresis on the good side
    baseline: float | None


@dataclass
class _State:
    instances: dict[int, _Instance] = field(default_factory=dict)
    status: str = "inactive"
    since: int | None = None
    completed: deque = field(default_factory=lambda: deque(maxlen=_HISTORY))  # (start, value) of completed windows
    week_stats: dict[int, list[float]] = field(default_factory=dict)  # hour-of-week slot -> [n, mean, m2]
    last_completed: int | None = None
    forecaster: object | None = None
    warning: bool = False
    asof: int | None = None  # the newest complete window the lifecycle has stepped through


def fingerprint(rule_name: str, labels: dict[str, str]) -> str:
    """Stable identity of one rule and scope key (the same across restarts and workers)."""
    text = rule_name + "|" + "|".join(f"{k}={labels[k]}" for k in sorted(labels))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def scope_labels(rule: AlertRule, cell: CellUpdate) -> dict[str, str]:
    levels = {"network": (), "province": ("province",), "city": ("province", "city"),
              "district": ("province", "city", "district")}[rule.scope]  # fmt: skip
    return {k: getattr(cell, k) for k in (*levels, *rule.by)}


class AlertEngine:
    def __init__(
        self,
        rules: list[AlertRule],
        windows: dict[str, WindowSpec],
        subscribers: Callable[[dict[str, str], int], float | None] | None = None,
    ) -> None:
        self.rules = list(rules)
        self.hops = {r.name: int(windows[r.window].hop.total_seconds()) for r in rules}
        self.sizes = {r.name: int(windows[r.window].size.total_seconds()) for r in rules}
        self.subscribers = subscribers  # (scope labels, window start) -> subscribers, for complaint rates
        self._by_window: dict[str, list[AlertRule]] = {}
        for r in self.rules:
            self._by_window.setdefault(r.window, []).append(r)
        self._partials: dict[tuple, np.ndarray] = {}  # (window, start, cell labels, writer) -> counters
        self._agg: dict[str, dict[tuple, np.ndarray]] = {r.name: {} for r in self.rules}  # (start, key) -> counters
        self._labels: dict[tuple[str, tuple], dict[str, str]] = {}  # (rule, key) -> labels
        self._state: dict[tuple[str, tuple], _State] = {}
        self.watermark: int | None = None
        self._scope_of: dict[tuple[str, tuple], int] = {}  # (rule, cell) -> scope key id
        self._scope_ids: dict[tuple, int] = {}  # scope key -> id
        self._scope_keys: list[tuple] = []  # id -> scope key

    # -- input ---------------------------------------------------------------------------
    def apply(self, updates: Iterable[CellUpdate], watermark: int | None = None) -> list[Transition]:
        """Apply cell updates and return the transitions they cause.

        ``watermark`` (epoch s; the indicator stage's): windows ending at or before it are complete. Without
        it a window counts as complete once a later window has data.
        """
        updates = list(updates)
        keys = {(u.window, u.start, u.province, u.city, u.district, u.channel, u.business_line, u.writer) for u in updates}
        if len(keys) < len(updates):  # a cell's partial repeats: each version is a delta on the one before, in order
            return [t for u in updates for t in self.apply([u], watermark)]
        return self.apply_columns(
            CellColumns(
                np.array([u.window for u in updates], dtype=object),
                np.array([u.start for u in updates], np.int64),
                [(u.province, u.city, u.district, u.channel, u.business_line) for u in updates],
                np.array([u.writer for u in updates], np.int64),
                np.array([u.values for u in updates]).reshape(len(updates), WIDTH),
            ),
            watermark,
        )

    def apply_columns(self, cells: CellColumns, watermark: int | None = None) -> list[Transition]:
        """:meth:`apply` for many cell updates given as columns (a batch's changed cells; no object per cell).

        Each ``(window, start, cell, writer)`` at most once per call (a flush's cells are unique).
        """
        if watermark is not None:
            self.watermark = max(self.watermark or watermark, watermark)
        touched: dict[tuple[str, tuple], set[int]] = {}
        partials = self._partials
        for window, rules in self._by_window.items():
            idx = np.nonzero(cells.window == window)[0]
            if not len(idx):
                continue
            values = cells.values[idx]
            starts = cells.start[idx]
            keys = [(window, s, cells.cell[i], w) for i, s, w in zip(idx.tolist(), starts.tolist(), cells.writer[idx].tolist(), strict=True)]
            # Each writer's newest partial replaces its previous one: the sums move by the difference.
            old = np.zeros_like(values)
            fresh = np.ones(len(idx), bool)
            for j, k in enumerate(keys):
                prev = partials.get(k)
                if prev is not None:
                    old[j] = prev
                    fresh[j] = False
            delta = values - old
            moved = np.nonzero(fresh | delta.any(axis=1))[0]
            if not len(moved):
                continue
            for j in moved.tolist():
                partials[keys[j]] = values[j]
            delta, starts = delta[moved], starts[moved]
            moved_cells = [keys[j][2] for j in moved.tolist()]
            for rule in rules:
                # Sum the deltas per (window start, scope key) with numpy, then touch each group once.
                ids = np.fromiter((self._scope_id(rule, c) for c in moved_cells), np.int64, len(moved_cells))
                uniq, inverse = np.unique((starts << _SCOPE_BITS) | ids, return_inverse=True)
                sums = np.zeros((len(uniq), WIDTH))
                np.add.at(sums, inverse.reshape(-1), delta)
                agg = self._agg[rule.name]
                for u, row in zip(uniq.tolist(), sums, strict=True):
                    start, key = u >> _SCOPE_BITS, self._scope_keys[u & _SCOPE_MASK]
                    acc = agg.get((start, key))
                    agg[(start, key)] = row if acc is None else acc + row
                    touched.setdefault((rule.name, key), set()).add(start)
        out: list[Transition] = []
        rules = {r.name: r for r in self.rules}
        for (name, key), starts in touched.items():
            out.extend(self._evaluate(rules[name], key, starts))
        if watermark is not None:
            # Time passing completes windows: an alert whose scope went quiet can resolve.
            for (name, key), st in self._state.items():
                if st.status in ("pending", "firing") and (name, key) not in touched and st.instances and name in rules:
                    self._complete(rules[name], st)
                    out.extend(self._advance(rules[name], st, self._labels[(name, key)]))
        return out

    def _scope_id(self, rule: AlertRule, cell: tuple) -> int:
        """A small int for the rule's scope key of a cell (its labels are kept once, in ``_labels``)."""
        found = self._scope_of.get((rule.name, cell))
        if found is None:
            labels = scope_labels(rule, CellUpdate("", 0, 0, *cell, 0, None))
            key = tuple(labels.values())
            self._labels.setdefault((rule.name, key), labels)
            found = self._scope_ids.get(key)
            if found is None:
                found = self._scope_ids[key] = len(self._scope_keys)
                self._scope_keys.append(key)
            self._scope_of[(rule.name, cell)] = found
        return found

    def restore_status(self, rule_name: str, labels: dict[str, str], status: str, since: int) -> None:
        """An alert's last known status (from storage), so a restart does not announce it again."""
        key = tuple(labels.values())
        st = self._state.setdefault((rule_name, key), _State())
        self._labels.setdefault((rule_name, key), labels)
        if status in ("predicted", "unpredicted"):
            st.warning = status == "predicted"
            return
        st.status, st.since = status, since

    # -- judging -------------------------------------------------------------------------
    def _judge(self, rule: AlertRule, st: _State, labels: dict[str, str], start: int, row: np.ndarray) -> _Instance:
        subs = self.subscribers(labels, start) if self.subscribers and rule.indicator == "complaint_rate_per_10k" else None
        value = formulas.value(rule.indicator, row, subs)
        volume = formulas.volume(rule.indicator, row)
        if value is None or volume < rule.min_volume:
            return _Instance(value, volume, None, False, None)
        cmp = _CMP[rule.comparator]
        if rule.change is None:
            breach = cmp(value, rule.threshold)
            margin = rule.hysteresis if rule.comparator in (">", ">=") else -rule.hysteresis
            return _Instance(value, volume, breach, not cmp(value, rule.threshold - margin), None)
        score, baseline = self._change_score(rule, st, start, value)
        if score is None:
            return _Instance(value, volume, None, False, baseline)
        breach = cmp(score, rule.threshold)
        margin = rule.hysteresis if rule.comparator in (">", ">=") else -rule.hysteresis
        return _Instance(value, volume, breach, not cmp(score, rule.threshold - margin), baseline)

    def _change_score(self, rule: AlertRule, st: _State, start: int, value: float) -> tuple[float | None, float | None]:
        spec = rule.change
        if spec.kind == "percent":
            prev = [v for s, v in st.completed if s < start][-spec.baseline_windows :]
            if len(prev) < min(3, spec.baseline_windows):
                return None, None
            base = sum(prev) / len(prev)
            return ((value - base) / abs(base) * 100.0 if base else None), base
        stats = st.week_stats.get(self._slot(start))
        if stats is None or stats[0] < spec.min_weeks:
            return None, None
        n, mean, m2 = stats
        sd = math.sqrt(m2 / (n - 1)) if n > 1 else 0.0
        return ((value - mean) / sd if sd > 0 else None), mean

    @staticmethod
    def _slot(start: int) -> int:
        return (start % _WEEK) // 3600  # hour of week (epoch day 0 is a Thursday; any fixed origin does)

    def _is_complete(self, rule: AlertRule, st: _State, start: int) -> bool:
        """The watermark has passed the window's end (without a watermark: a later window has data)."""
        if self.watermark is not None:
            return start + self.sizes[rule.name] <= self.watermark
        return start < max(st.instances)

    def _evaluate(self, rule: AlertRule, key: tuple, starts: set[int]) -> list[Transition]:
        """Complete windows drive the lifecycle, in time order and once each (as the watermark passes them);
        a window still open can only raise an alert early (pending, firing), never clear one. So a batch
        that spans hours (a replay, partitions read unevenly) and a live feed go through the same
        transitions, and a late change to a complete window does not reopen history."""
        st = self._state.setdefault((rule.name, key), _State())
        labels = self._labels[(rule.name, key)]
        agg = self._agg[rule.name]
        for start in starts:
            st.instances.setdefault(start, _Instance(None, 0.0, None, False, None))
        self._complete(rule, st)
        for start in sorted(starts):
            st.instances[start] = self._judge(rule, st, labels, start, agg[(start, key)])
        out = self._advance(rule, st, labels)
        for start in sorted(starts):
            if not self._is_complete(rule, st, start):
                out.extend(self._step(rule, st, labels, start, final=False))
        if rule.forecast is not None and st.status not in ("pending", "firing"):
            newest = max(st.instances)
            out.extend(self._warn(rule, st, labels, newest, st.instances[newest]))
        # bounded: keep the processed windows a streak can still need, and every open one
        keep = max(rule.for_, rule.keep_firing_for) + 2
        done = [s for s in sorted(st.instances) if st.asof is not None and s <= st.asof]
        for s in done[:-keep]:
            del st.instances[s]
        return out

    def _advance(self, rule: AlertRule, st: _State, labels: dict[str, str]) -> list[Transition]:
        """Step the lifecycle through every window completed since the last step, in order."""
        out: list[Transition] = []
        for s in sorted(st.instances):
            if st.asof is not None and s <= st.asof:
                continue
            if not self._is_complete(rule, st, s):
                break
            st.asof = s
            out.extend(self._step(rule, st, labels, s, final=True))
        return out

    def _step(self, rule: AlertRule, st: _State, labels: dict[str, str], asof: int, final: bool) -> list[Transition]:
        judged = sorted((s for s, i in st.instances.items() if i.verdict is not None and s <= asof), reverse=True)
        streak = 0
        for s in judged:
            if not st.instances[s].verdict:
                break
            streak += 1
        clear = 0
        for s in judged:
            if not st.instances[s].clear or (st.since is not None and s < st.since):
                break  # only windows since the episode began count towards clearing it
            clear += 1
        out: list[Transition] = []
        newest = judged[0] if judged else asof
        inst = st.instances[newest]

        def emit(status: str, since: int, **extra) -> None:
            out.append(Transition(rule, fingerprint(rule.name, labels), status, labels, inst.value, rule.threshold,
                                  inst.baseline, inst.volume, newest, newest + self.sizes[rule.name], since, **extra))  # fmt: skip

        if st.status in ("inactive", "resolved", "pending") and streak:
            since = judged[streak - 1]
            if streak >= rule.for_:
                st.warning = False
                st.status, st.since = "firing", since
                emit("firing", since)
            elif st.status != "pending":
                st.warning = False
                st.status, st.since = "pending", since
                emit("pending", since)
        elif final and st.status == "pending" and not streak:
            st.status = "inactive"
            emit("inactive", st.since or newest)
        elif final and st.status == "firing" and clear >= rule.keep_firing_for:
            st.status = "resolved"
            emit("resolved", st.since or newest)
        return out

    # -- completed windows: baselines and forecasts ---------------------------------------
    def _complete(self, rule: AlertRule, st: _State) -> None:
        """Complete windows feed baselines and the forecaster, once each, in order."""
        for s in sorted(st.instances):
            if st.last_completed is not None and s <= st.last_completed:
                continue
            if not self._is_complete(rule, st, s):
                break
            inst = st.instances[s]
            st.last_completed = s
            if inst.value is None:
                continue
            st.completed.append((s, inst.value))
            slot = st.week_stats.setdefault(self._slot(s), [0, 0.0, 0.0])
            slot[0] += 1
            d = inst.value - slot[1]
            slot[1] += d / slot[0]
            slot[2] += d * (inst.value - slot[1])
            if rule.forecast is not None and inst.volume >= rule.min_volume:
                if st.forecaster is None:
                    st.forecaster = time_series.HoltWinters(alpha=rule.forecast.alpha, beta=rule.forecast.beta)
                st.forecaster.learn_one(inst.value)

    def _warn(self, rule: AlertRule, st: _State, labels: dict[str, str], newest: int, inst: _Instance) -> list[Transition]:
        f = rule.forecast
        fp = fingerprint(rule.name + ":forecast", labels)
        crossing = None
        if st.forecaster is not None and len(st.completed) >= f.min_windows:
            cmp = _CMP[rule.comparator]
            for h, v in enumerate(st.forecaster.forecast(horizon=f.horizon), start=1):
                if cmp(v, rule.threshold):
                    crossing = (h, v)
                    break
        hop = self.hops[rule.name]
        base = st.last_completed if st.last_completed is not None else newest
        if crossing and not st.warning:
            st.warning = True
            h, v = crossing
            return [Transition(rule, fp, "predicted", labels, inst.value, rule.threshold, None, inst.volume, newest,
                               newest + self.sizes[rule.name], newest, predicted_value=v, predicted_window_start=base + h * hop)]  # fmt: skip
        if not crossing and st.warning:
            st.warning = False
            return [Transition(rule, fp, "unpredicted", labels, inst.value, rule.threshold, None, inst.volume, newest,
                               newest + self.sizes[rule.name], newest)]  # fmt: skip
        return []

    # -- reading and housekeeping ---------------------------------------------------------
    def alerts(self, statuses: tuple[str, ...] = ("pending", "firing")) -> list[Transition]:
        """The current alerts (newest window's figures), for queries and re-sending."""
        out = []
        rules = {r.name: r for r in self.rules}
        for (name, key), st in self._state.items():
            if st.status not in statuses or not st.instances:
                continue
            rule = rules.get(name)
            if rule is None:
                continue
            labels = self._labels[(name, key)]
            newest = max(st.instances)
            inst = st.instances[newest]
            out.append(Transition(rule, fingerprint(name, labels), st.status, labels, inst.value, rule.threshold,
                                  inst.baseline, inst.volume, newest, newest + self.sizes[name], st.since or newest))  # fmt: skip
        return out

    def counts(self) -> dict[str, int]:
        """How many alerts are in each state (``predicted``: trend warnings raised)."""
        out: dict[str, int] = {}
        for st in self._state.values():
            out[st.status] = out.get(st.status, 0) + 1
            if st.warning:
                out["predicted"] = out.get("predicted", 0) + 1
        return out

    def status(self, fp: str) -> str | None:
        for (name, key), st in self._state.items():
            if fingerprint(name, self._labels[(name, key)]) == fp:
                return st.status
        return None

    def prune(self, before: int) -> int:
        """Forget window instances that started before ``before`` (epoch s); returns how many cells left."""
        old = [k for k in self._partials if k[1] < before]
        for k in old:
            del self._partials[k]
        for agg in self._agg.values():
            for k in [k for k in agg if k[0] < before]:
                del agg[k]
        for st in self._state.values():
            for s in [s for s in st.instances if s < before]:
                del st.instances[s]
        return len(old)

    def __len__(self) -> int:
        return len(self._partials)


__all__ = ["WIDTH", "AlertEngine", "CellColumns", "CellUpdate", "Transition", "fingerprint", "scope_labels"]
