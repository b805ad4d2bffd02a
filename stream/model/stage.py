"""The factor-model stage: customer histories, per-batch learning, publication and snapshots.

Runs inside the ingest agent's batch, after the lifecycle stage and before the commit:

1. every new ticket state goes into the customer histories (:class:`CustomerHistory`);
2. every accepted satisfaction event becomes one row of factors (:func:`features`), and the
   batch's rows are learned at once (:meth:`FactorModel.learn_many`, per district and network-wide);
3. every ``model.publish_interval`` the changed models' coefficients, the factor exposures
   accumulated since the last publication and a snapshot of the models (with the source offsets
   it has learned through) are returned for ClickHouse and the ``cx.factor-coefficients.v1`` topic;
   they are stored with the batch, before its offsets are committed.

Restart: customer histories are rebuilt from ``ticket_state`` (the complaints created within the
horizon of the worker's ticket partitions). The models come from the newest snapshot of exactly the
worker's satisfaction partitions, and the events stored after it (``kafka_offset`` past the
snapshot's) are learned again from ClickHouse, so a restart loses and repeats nothing. Redelivered
events that were stored before the crash are resends to the warmed dedup set and are not learned
twice. When the partition set changed (a rebalance), no snapshot fits and the models start afresh.

The models of one worker learn from the customers of its partitions (a random sample of every
district's customers, as customer ids are hashed): with several workers each publishes its own
estimate under its ``shard`` (its partition set), and readers combine the shards by inverse-variance
weighting (:mod:`stream.query.explain`).
"""

from __future__ import annotations

import logging
import pickle
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import orjson
import pyarrow as pa

from ..ingest.records import Accepted
from ..sink.clickhouse import Writer
from ..state.lifecycle import TicketState
from ..topology import ModelSettings
from .explain import explain
from .features import Complaint, CustomerHistory, FeatureSpec, features_into
from .regression import NETWORK, FactorModel

log = logging.getLogger("cxstream.model")

#: factor exposures are summed per district per hour of event time (explanations use whole hours)
EXPOSURE_BUCKET_S = 3600
#: exposures kept in memory for alert explanations
RECENT_S = 2 * 86400
_TS = pa.timestamp("ms", tz="UTC")


def _utc(v: datetime | None) -> datetime | None:
    return v if v is None or v.tzinfo else v.replace(tzinfo=timezone.utc)


@dataclass
class ModelOutput:
    """What one publication stores and sends (retried as is)."""

    coefficients: pa.Table
    exposure: pa.Table
    snapshot: pa.Table
    messages: list[tuple[bytes, bytes]]


class ModelStage:
    def __init__(self, settings: ModelSettings, group_id: str = "cxstream", flush_rows: int = 50_000) -> None:
        self.settings = settings
        self.group_id = group_id
        self.spec = FeatureSpec.from_settings(settings.factors)
        self.names = self.spec.names()
        self.history = CustomerHistory(settings.horizon, settings.max_customers)
        self.model = FactorModel(self.names, settings.memory, settings.prior)
        self.regions: dict[str, tuple[str, str]] = {}  # district -> (province, city)
        self.as_of: dict[str, float] = {}  # model -> newest event time learned (epoch s)
        self.partitions: tuple[int, ...] | None = None  # the satisfaction partitions the models learn from
        self.learned_through: dict[int, int] = {}  # satisfaction partition -> last offset learned
        self.changed: set[str] = set()
        self.learned = 0
        # (district, bucket start epoch s) -> [samples, score sum, factor sums...], since the last publication
        self._exposure: dict[tuple[str, int], np.ndarray] = {}
        # the same, kept for RECENT_S for explanations in memory (alerts)
        self._recent: dict[tuple[str, int], np.ndarray] = {}
        self._published_at = time.monotonic()
        self._buffer: list[tuple[list[str], np.ndarray, np.ndarray]] = []
        self._buffered = 0
        self.flush_rows = flush_rows

    # -- per batch -----------------------------------------------------------------------
    def observe(self, states: list[TicketState]) -> None:
        """New ticket states: the customers' complaint histories."""
        update = self.history.update
        for s in states:
            update(s)

    def learn(self, accepted: list[Accepted], positions: dict[int, int] | None = None) -> int:
        """Learn a batch's accepted satisfaction events; ``positions``: partition -> last offset of the batch."""
        # A redelivered event the models already learned (the snapshot says so) is not learned twice.
        through = self.learned_through
        events = [a.event for a in accepted if a.record.offset > through.get(a.record.partition, -1)]
        if positions:
            for p, off in positions.items():
                if off > through.get(p, -1):
                    through[p] = off
        return self._learn_events(events) if events else 0

    def _learn_events(self, events: list) -> int:
        names, spec, history = self.names, self.spec, self.history
        X = np.zeros((len(events), len(names)))
        y = np.fromiter((e.overall_score for e in events), np.float64, len(events))
        districts: list[str] = []
        for i, e in enumerate(events):
            features_into(X[i], e, history, spec=spec)
            r = e.region
            districts.append(r.district)
            if r.district not in self.regions:
                self.regions[r.district] = (r.province, r.city)
        # Buffered, and learned at the next publication (or when the buffer is full): learn_many on
        # the concatenation is exactly learn_many in pieces (river's closed form), with one call per
        # district per publication instead of per batch.
        self._buffer.append((districts, X, y))
        self._buffered += len(y)
        if self._buffered >= self.flush_rows:
            self.flush()
        times = np.array([e.event_time.timestamp() for e in events])
        self._account(districts, times, X, y)
        self.learned += len(events)
        return len(events)

    def _account(self, districts: list[str], times: np.ndarray, X: np.ndarray, y: np.ndarray) -> None:
        """Exposures per (district, hour) and each model's newest event time."""
        buckets = (times // EXPOSURE_BUCKET_S).astype(np.int64) * EXPOSURE_BUCKET_S
        rows = np.hstack([np.ones((len(y), 1)), y[:, None], X])
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, key in enumerate(zip(districts, buckets.tolist(), strict=True)):
            groups[key].append(i)
        for key, ix in groups.items():
            part = rows[ix].sum(axis=0)
            for book in (self._exposure, self._recent):
                acc = book.get(key)
                book[key] = part if acc is None else acc + part
            d = key[0]
            newest = float(times[ix].max())
            if newest > self.as_of.get(d, float("-inf")):
                self.as_of[d] = newest
        newest = float(times.max())
        if newest > self.as_of.get(NETWORK, float("-inf")):
            self.as_of[NETWORK] = newest

    # -- publication ---------------------------------------------------------------------
    def flush(self) -> None:
        """Learn the buffered rows."""
        if not self._buffer:
            return
        districts = [d for part, _, _ in self._buffer for d in part]
        X = np.vstack([x for _, x, _ in self._buffer])
        y = np.concatenate([v for _, _, v in self._buffer])
        self._buffer.clear()
        self._buffered = 0
        self.changed.update(self.model.learn_many(districts, X, y))

    def explain_recent(self, labels: dict[str, str], start: float, end: float, top: int = 3) -> list[dict]:
        """Top factors of a scope (``labels``: province / city / district, as the scope has them) in
        ``[start, end)`` epoch seconds, from memory: the district's model for a district, else the network's."""
        district = labels.get("district")
        report = self.model.report(district if district and district in self.model.districts() else NETWORK)
        if not report.n:
            return []

        def within(d: str) -> bool:
            if district:
                return d == district
            province, city = self.regions.get(d, ("", ""))
            return labels.get("province", province) == province and labels.get("city", city) == city

        acc = None
        for (d, bucket), row in self._recent.items():
            if start - EXPOSURE_BUCKET_S < bucket < end and within(d):
                acc = row.copy() if acc is None else acc + row
        exposure = dict(zip(self.names, (acc[2:] / acc[0]).tolist(), strict=True)) if acc is not None and acc[0] else {}
        coef = {f: (c, report.stderr[f]) for f, c in report.coefficients.items()}
        return [
            {"factor": e.factor, "coefficient": e.coefficient, "stderr": e.stderr, "exposure": e.exposure, "impact": e.impact}
            for e in explain(district or NETWORK, coef, exposure, None, top)
        ]

    def pending(self) -> bool:
        """Something learned since the last publication."""
        return bool(self.changed or self._exposure or self._buffer)

    def due(self) -> bool:
        return self.pending() and (
            time.monotonic() - self._published_at >= self.settings.publish_interval.total_seconds()
        )

    @property
    def shard(self) -> str:
        return ",".join(map(str, self.partitions or ()))

    def publish(self, published_at: datetime) -> ModelOutput:
        """The changed models' coefficients, the exposures since the last call, and a snapshot."""
        self._published_at = time.monotonic()
        self.flush()
        if self.as_of:  # recent exposures: the last RECENT_S of event time
            horizon = max(self.as_of.values()) - RECENT_S
            for k in [k for k in self._recent if k[1] < horizon]:
                del self._recent[k]
        reports = [self.model.report(d) for d in sorted(self.changed)]
        self.changed.clear()
        shard = self.shard
        coef_cols: dict[str, list] = defaultdict(list)
        messages: list[tuple[bytes, bytes]] = []
        for r in reports:
            province, city = self.regions.get(r.district, ("", "")) if r.district != NETWORK else ("", "")
            as_of = datetime.fromtimestamp(self.as_of.get(r.district, 0.0), timezone.utc)
            for f in self.names:
                coef_cols["factor"].append(f)
                coef_cols["coefficient"].append(r.coefficients[f])
                coef_cols["stderr"].append(r.stderr[f])
            k = len(self.names)
            for col, v in (
                ("published_at", published_at), ("as_of", as_of), ("shard", shard), ("district", r.district),
                ("province", province), ("city", city), ("n", r.n), ("n_eff", r.n_eff),
                ("intercept", r.intercept), ("residual_sd", r.residual_sd),
            ):  # fmt: skip
                coef_cols[col].extend([v] * k)
            messages.append((r.district.encode(), _message(r, province, city, shard, as_of, published_at)))
        coefficients = pa.table(
            {
                "published_at": pa.array(coef_cols["published_at"], _TS),
                "as_of": pa.array(coef_cols["as_of"], _TS),
                "shard": pa.array(coef_cols["shard"], pa.string()),
                "district": pa.array(coef_cols["district"], pa.string()),
                "province": pa.array(coef_cols["province"], pa.string()),
                "city": pa.array(coef_cols["city"], pa.string()),
                "factor": pa.array(coef_cols["factor"], pa.string()),
                "coefficient": pa.array(coef_cols["coefficient"], pa.float64()),
                "stderr": pa.array(coef_cols["stderr"], pa.float64()),
                "n": pa.array(coef_cols["n"], pa.uint64()),
                "n_eff": pa.array(coef_cols["n_eff"], pa.float64()),
                "intercept": pa.array(coef_cols["intercept"], pa.float64()),
                "residual_sd": pa.array(coef_cols["residual_sd"], pa.float64()),
            }
        )
        exposure = self._exposure_table(published_at)
        return ModelOutput(coefficients, exposure, self._snapshot_table(published_at), messages)

    def _exposure_table(self, published_at: datetime) -> pa.Table:
        cols: dict[str, list] = defaultdict(list)
        k = len(self.names)
        for (d, bucket), acc in sorted(self._exposure.items()):
            province, city = self.regions.get(d, ("", ""))
            cols["district"].extend([d] * k)
            cols["province"].extend([province] * k)
            cols["city"].extend([city] * k)
            cols["bucket_start"].extend([bucket] * k)
            cols["samples"].extend([int(acc[0])] * k)
            cols["score_sum"].extend([float(acc[1])] * k)
            cols["factor"].extend(self.names)
            cols["value_sum"].extend(acc[2:].tolist())
        self._exposure.clear()
        n = len(cols["district"])
        return pa.table(
            {
                "district": pa.array(cols["district"], pa.string()),
                "province": pa.array(cols["province"], pa.string()),
                "city": pa.array(cols["city"], pa.string()),
                "bucket_start": pa.array(cols["bucket_start"], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
                "factor": pa.array(cols["factor"], pa.string()),
                "samples": pa.array(cols["samples"], pa.uint64()),
                "score_sum": pa.array(cols["score_sum"], pa.float64()),
                "value_sum": pa.array(cols["value_sum"], pa.float64()),
                "shard": pa.array([self.shard] * n, pa.string()),
                "published_at": pa.array([published_at] * n, _TS),
            }
        )

    def snapshot(self) -> bytes:
        """The models and what they learned (pickle: load only snapshots this service wrote)."""
        self.flush()
        state = {"version": 1, "names": self.names, "model": self.model, "regions": self.regions, "as_of": self.as_of}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def _snapshot_table(self, taken_at: datetime) -> pa.Table:
        parts = sorted(self.learned_through) if self.partitions is None else list(self.partitions)
        return pa.table(
            {
                "group_id": pa.array([self.group_id], pa.string()),
                "partitions": pa.array([parts], pa.list_(pa.uint16())),
                "offsets": pa.array([[self.learned_through.get(p, -1) + 1 for p in parts]], pa.list_(pa.uint64())),
                "taken_at": pa.array([taken_at], _TS),
                "learned": pa.array([self.learned], pa.uint64()),
                "blob": pa.array([self.snapshot()], pa.binary()),
            }
        )

    # -- restart -------------------------------------------------------------------------
    def restore_from(self, blob: bytes, next_offsets: dict[int, int]) -> bool:
        """Load a snapshot; ``next_offsets``: partition -> first offset it has not learned."""
        state = pickle.loads(blob)
        if state.get("version") != 1 or tuple(state["names"]) != tuple(self.names):
            log.warning("the factor set changed since the last model snapshot; the models start afresh")
            return False
        self.model = state["model"]
        self.regions = dict(state["regions"])
        self.as_of = dict(state["as_of"])
        self.learned_through = {p: off - 1 for p, off in next_offsets.items()}
        return True

    def restore(self, writer: Writer, partitions: list[int], ticket_partitions: list[int]) -> None:
        """After an assignment: customer histories of the ticket partitions; models of the satisfaction ones."""
        parts = tuple(sorted(set(partitions)))
        db, client = writer.database, writer.client
        if ticket_partitions:
            rows = writer.rows(  # a block at a time: a million customers at a restart
                f"SELECT {HISTORY_COLUMNS} FROM {db}.ticket_state FINAL WHERE created_at >= "
                f"(SELECT max(created_at) FROM {db}.ticket_state) - toIntervalSecond(%(horizon)s) AND ticket_id IN "
                f"(SELECT ticket_id FROM {db}.ticket_events WHERE step = 'created' AND kafka_partition IN %(parts)s)",
                {"horizon": int(self.settings.horizon.total_seconds()), "parts": sorted(ticket_partitions)},
            )
            with closing(rows):  # a stream left open holds the connection
                added = self.add_complaints(rows)
            log.info("model: %d recent complaints of partitions %s back in customer histories", added,
                     sorted(ticket_partitions))  # fmt: skip
        if parts == self.partitions:
            return  # same partitions as before: the models in memory are current
        self.reset()
        self.partitions = None  # set once restored: a restore that fails half-way is redone whole
        if not parts:
            self.partitions = parts
            return
        found = client.query(
            f"SELECT offsets, blob FROM {db}.factor_model_snapshots FINAL "
            f"WHERE group_id = %(group)s AND partitions = %(parts)s",
            parameters={"group": self.group_id, "parts": list(parts)},
            column_formats={"blob": "bytes"},
        ).result_rows
        next_offsets = dict.fromkeys(parts, 0)
        if found:
            offsets, blob = found[0]
            if self.restore_from(bytes(blob), dict(zip(parts, offsets, strict=True))):
                next_offsets = dict(zip(parts, offsets, strict=True))
        # What was stored after the snapshot was learned before the restart (or never): learn it now,
        # the newest REPLAY_LIMIT events at most (without a snapshot: a warm start from history).
        where = " OR ".join(f"(kafka_partition = {p} AND kafka_offset >= {int(o)})" for p, o in next_offsets.items())
        rows = client.query(
            f"SELECT * FROM (SELECT {REPLAY_COLUMNS} FROM {db}.satisfaction_events FINAL WHERE {where} "
            f"ORDER BY event_time DESC LIMIT {REPLAY_LIMIT}) ORDER BY event_time"
        ).result_rows
        replayed = self.learn_stored(rows)
        self.flush()
        self.partitions = parts
        log.info("model: %s for partitions %s, %d stored events learned since",
                 "snapshot restored" if found else "no snapshot, fresh models", list(parts), replayed)  # fmt: skip

    def reset(self) -> None:
        self.model = FactorModel(self.names, self.settings.memory, self.settings.prior)
        self.regions, self.as_of, self.learned_through = {}, {}, {}
        self.changed.clear()
        self._buffer.clear()
        self._buffered = 0

    def add_complaints(self, rows: Iterable[Sequence]) -> int:
        """Stored ticket states (see :data:`HISTORY_COLUMNS`) into the customer histories."""
        n = 0
        for (ticket_id, customer_id, category, created, status, breached, reopens, handling, closure) in rows:
            if created is None or not customer_id:
                continue
            self.history.add(
                sys.intern(customer_id),  # the restored ticket's string (TicketStage interns restored ids)
                Complaint(sys.intern(ticket_id), category, _utc(created).timestamp(), status != "closed", bool(breached),
                          reopens > 0, handling, closure),
            )  # fmt: skip
            n += 1
        return n

    def learn_stored(self, rows: list[tuple]) -> int:
        """Satisfaction events read back from ClickHouse (see :data:`REPLAY_COLUMNS`), in event-time order."""
        events = []
        for (event_time, customer_id, ticket_id, channel, tier, plan, province, city, district, score, part, off) in rows:
            events.append(SimpleNamespace(
                event_time=_utc(event_time), customer_id=customer_id, ticket_id=ticket_id or None,
                channel=channel, customer_tier=tier or None, plan=plan or None, overall_score=score,
                region=SimpleNamespace(province=province, city=city, district=district),
            ))  # fmt: skip
            if off > self.learned_through.get(part, -1):
                self.learned_through[part] = off
        return self._learn_events(events) if events else 0


#: at most this many stored events are learned again at a restart
REPLAY_LIMIT = 1_000_000
#: ticket_state columns :meth:`ModelStage.add_complaints` takes
HISTORY_COLUMNS = (
    "ticket_id, customer_id, complaint_category, created_at, status, sla_breached, reopen_count, handling_s, closure_type"
)
#: satisfaction_events columns :meth:`ModelStage.learn_stored` takes
REPLAY_COLUMNS = (
    "event_time, customer_id, ticket_id, channel, customer_tier, plan, province, city, district, overall_score, "
    "kafka_partition, kafka_offset"
)


def _message(r, province: str, city: str, shard: str, as_of: datetime, published_at: datetime) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "district": r.district,
            "province": province or None,
            "city": city or None,
            "shard": shard,
            "as_of": as_of,
            "published_at": published_at,
            "n": r.n,
            "n_eff": r.n_eff,
            "intercept": r.intercept,
            "residual_sd": r.residual_sd,
            "factors": {f: {"coefficient": c, "stderr": r.stderr[f]} for f, c in r.coefficients.items()},
        },
        option=orjson.OPT_UTC_Z,
    )


