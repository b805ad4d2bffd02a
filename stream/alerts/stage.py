"""The alert stage: the rule engine in the ingest batch, and what its transitions become.

Runs inside the ingest agent's batch, after the indicator and model stages and before the commit:

1. the indicator cells the batch changed (this worker's partials, for the windows rules watch) go into
   the :class:`~.engine.AlertEngine`, which sums partials over writers and judges the rules;
2. each transition becomes an :class:`~stream.contract.Alert`: summary, value against threshold, since
   when, volume, the top factors from the factor model, links to look deeper; a firing alert opens a
   supervision ticket;
3. the rows (``alerts``, ``supervision_events``, ``supervision_tickets``) and messages
   (``cx.alerts.v1``, ``cx.supervision-events.v1``) are stored with the batch; delivery to
   Alertmanager and a webhook is queued after the commit (:mod:`.delivery`), so it never holds the
   stream back.

Restart: the engine gets back the stored partials of the rule windows within ``alerts.state_horizon``
(the newest version of every writer's cell), and the last status of every alert, so a firing alert is
not announced again and a resolved one is not forgotten.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import numpy as np
import orjson
import pyarrow as pa

from ..indicators.counters import COUNTERS
from ..indicators.cube import Columns, Cube
from ..sink.clickhouse import Writer
from ..topology import AlertSettings, IndicatorSettings
from .engine import AlertEngine, CellColumns, CellUpdate, Transition
from .supervision import SupervisionBook, SupervisionTicket

log = logging.getLogger("cxstream.alerts")

_TS = pa.timestamp("ms", tz="UTC")
_S = pa.timestamp("s", tz="UTC")
#: indicator -> how a person reads it
NAMES = {
    "complaints": "complaints", "complaint_rate_per_10k": "complaints per 10k subscribers",
    "sat_mean": "mean satisfaction", "csat": "CSAT", "nps": "NPS", "avg_handling_s": "average handling time (s)",
    "sla_overdue_rate": "SLA-overdue rate", "fcr_rate": "first-contact resolution", "reopen_rate": "reopen rate",
    "perception_gap_rate": "perception gap", "perceived_slow_rate": "perceived-slow rate",
}  # fmt: skip
#: the dashboard of each scope (deploy/grafana/dashboards)
_DASHBOARD = {"district": "cx-district", "city": "cx-network", "province": "cx-network", "network": "cx-network"}


def _utc(epoch_s: int | float) -> datetime:
    return datetime.fromtimestamp(epoch_s, timezone.utc)


@dataclass
class AlertOutput:
    """What one batch's transitions store, send and deliver (retried as is)."""

    alerts: list[dict] = field(default_factory=list)  # Alert documents
    supervision: list[dict] = field(default_factory=list)  # SupervisionEvent documents
    tickets: list[SupervisionTicket] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.supervision)


class AlertStage:
    def __init__(
        self,
        settings: AlertSettings,
        indicators: IndicatorSettings,
        database: str = "cxstream",
        explain: Callable[[dict[str, str], float, float], list[dict]] | None = None,
        subscribers: Callable[[dict[str, str], int], float | None] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        windows = {w.name: w for w in indicators.windows}
        self.engine = AlertEngine(settings.rules, windows, subscribers)
        self.windows = sorted({r.window for r in settings.rules})
        self.explain = explain  # (scope labels, start, end) -> top factors, from the factor model
        self.book = SupervisionBook()

    # -- per batch -----------------------------------------------------------------------
    def cell_updates(self, cube: Cube, cells: Columns, writer: int) -> CellColumns | None:
        """This worker's changed cells of the windows rules watch, as columns."""
        if not len(cells) or not self.windows:
            return None
        idx = np.nonzero(np.isin(cells.window, self.windows))[0]
        by_id = cube.cells_by_id
        return CellColumns(cells.window[idx], cells.start[idx], [by_id[c] for c in cells.cell[idx].tolist()],
                           np.full(len(idx), writer, np.int64), cells.values[idx])  # fmt: skip

    def apply(
        self,
        updates: CellColumns | list[CellUpdate] | None,
        trigger_arrival_ms: int | None,
        now: datetime,
        watermark: datetime | None = None,
    ) -> AlertOutput:
        """Judge the rules on the updates (columns, or a list of cell updates); the documents their transitions become."""
        out = AlertOutput()
        if updates is None or not len(updates if isinstance(updates, list) else updates.start):
            return out
        # No watermark yet (held until every source partition has been read): nothing is complete.
        mark = 0 if watermark is None else int(watermark.timestamp())
        if isinstance(updates, list):
            transitions = self.engine.apply(updates, mark)
        else:
            transitions = self.engine.apply_columns(updates, mark)
        for i, t in enumerate(transitions):
            # 1 ms apart: the order of a batch's changes survives in evaluated_at (the newest status wins)
            doc = self.document(t, now + timedelta(milliseconds=i), trigger_arrival_ms)
            out.alerts.append(doc)
            if t.status == "firing":
                opened = self.book.open_for(doc["alert_id"], t.fingerprint, t.rule.name, t.rule.severity,
                                            doc["summary"], t.labels, now)  # fmt: skip
                if opened:
                    out.tickets.append(opened[0])
                    out.supervision.append(opened[1])
        return out

    def document(self, t: Transition, now: datetime, trigger_arrival_ms: int | None = None) -> dict:
        """The Alert document of a transition (see stream/contract/alerts.py)."""
        r = t.rule
        name = NAMES.get(r.indicator, r.indicator.replace("_", " "))
        where = " ".join(f"{k} {v}" for k, v in t.labels.items() if k in ("district", "city", "province")) or "network"
        split = ", ".join(f"{k} {v}" for k, v in t.labels.items() if k in ("channel", "business_line"))
        value = "n/a" if t.value is None else f"{t.value:.4g}"
        if r.change is None:
            crossed = f"{value} {r.comparator} {r.threshold:g}"
        else:
            unit = "%" if r.change.kind == "percent" else " sd"
            base = "n/a" if t.baseline is None else f"{t.baseline:.4g}"
            crossed = f"{value} vs baseline {base}: change {r.comparator} {r.threshold:g}{unit}"
        if t.status in ("predicted", "unpredicted"):
            at = _utc(t.predicted_window_start or t.window_start)
            crossed = (f"forecast {t.predicted_value:.4g} {r.comparator} {r.threshold:g} by the window from {at:%Y-%m-%d %H:%M} UTC "
                       f"(now {value})") if t.status == "predicted" else f"forecast no longer crosses {r.threshold:g} (now {value})"  # fmt: skip
        summary = r.summary or (
            f"{name} {crossed} in {where}{f' ({split})' if split else ''} "
            f"({r.window} window from {_utc(t.window_start):%Y-%m-%d %H:%M} UTC, volume {t.volume:g})"
        )
        if t.status in ("resolved", "inactive") and r.summary is None:
            summary = (f"[{t.status}] {name} back to {value} (breach: {r.comparator} {r.threshold:g}) in {where}"
                       f"{f' ({split})' if split else ''}, since {_utc(t.since):%Y-%m-%d %H:%M} UTC")  # fmt: skip
        elif t.status in ("resolved", "inactive", "unpredicted"):
            summary = f"[{t.status}] " + summary
        top = self.explain(t.labels, t.window_start, t.window_end) if self.explain and t.status in ("firing", "pending", "predicted") else []
        alert_id = f"{t.fingerprint}-{t.since}"
        return {
            "schema_version": 1, "alert_id": alert_id, "fingerprint": t.fingerprint, "rule": r.name,
            "status": t.status, "severity": "warning" if t.status == "predicted" else r.severity,
            "indicator": r.indicator, "window": r.window, "scope": r.scope,
            "labels": {**t.labels, **r.labels}, "comparator": r.comparator, "threshold": r.threshold,
            "change": None if r.change is None else r.change.kind, "value": t.value, "baseline": t.baseline,
            "volume": t.volume, "window_start": _utc(t.window_start), "window_end": _utc(t.window_end),
            "since": _utc(t.since), "summary": summary, "top_factors": top,
            "links": self._links(t), "predicted_value": t.predicted_value,
            "predicted_window_start": None if t.predicted_window_start is None else _utc(t.predicted_window_start),
            "evaluated_at": now,
            "trigger_arrival": None if trigger_arrival_ms is None else datetime.fromtimestamp(trigger_arrival_ms / 1000, timezone.utc),
        }  # fmt: skip

    def _links(self, t: Transition) -> dict:
        r, labels = t.rule, t.labels
        end = _utc(t.window_end).isoformat().replace("+00:00", "Z")
        explain = f"cxstream explain {labels.get('district', '*')} --window {r.window} --end {end}"
        level = r.scope
        where = " AND ".join([f"level = '{level}'"] + [f"{k} = '{v}'" for k, v in labels.items()] + [f"window = '{r.window}'"])
        query = f"SELECT window_start, {r.indicator} FROM {self.database}.indicator_rollups WHERE {where} ORDER BY window_start"
        dashboard = None
        if self.settings.dashboard_url:
            params = {f"var-{k}": v for k, v in labels.items() if k in ("province", "city", "district")}
            params |= {"from": (t.since - 6 * 3600) * 1000, "to": (t.window_end + 3600) * 1000}
            dashboard = f"{self.settings.dashboard_url.rstrip('/')}/d/{_DASHBOARD[r.scope]}?{urlencode(params)}"
        return {"explain": explain, "query": query, "dashboard": dashboard, "runbook": r.runbook}

    # -- storage -------------------------------------------------------------------------
    @staticmethod
    def messages(out: AlertOutput) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        opt = orjson.OPT_UTC_Z
        alerts = [(a["fingerprint"].encode(), orjson.dumps(a, option=opt)) for a in out.alerts]
        events = [(e["ticket_id"].encode(), orjson.dumps(e, option=opt)) for e in out.supervision]
        return alerts, events

    @staticmethod
    def alerts_table(docs: list[dict]) -> pa.Table:
        def col(name, typ, f=lambda v: v):
            return pa.array([f(d.get(name)) for d in docs], typ)

        labels = [d["labels"] for d in docs]
        return pa.table({
            "alert_id": col("alert_id", pa.string()), "fingerprint": col("fingerprint", pa.string()),
            "rule": col("rule", pa.string()), "status": col("status", pa.string()),
            "severity": col("severity", pa.string()), "indicator": col("indicator", pa.string()),
            "window": col("window", pa.string()), "scope": col("scope", pa.string()),
            **{k: pa.array([lab.get(k, "") for lab in labels], pa.string())
               for k in ("province", "city", "district", "channel", "business_line")},
            "labels": pa.array([list(lab.items()) for lab in labels], pa.map_(pa.string(), pa.string())),
            "comparator": col("comparator", pa.string()), "threshold": col("threshold", pa.float64()),
            "change": col("change", pa.string(), lambda v: v or ""), "value": col("value", pa.float64()),
            "baseline": col("baseline", pa.float64()), "volume": col("volume", pa.float64()),
            "window_start": col("window_start", _S), "window_end": col("window_end", _S), "since": col("since", _S),
            "summary": col("summary", pa.string()),
            "top_factors": col("top_factors", pa.string(), lambda v: json.dumps(v or [])),
            "dashboard_url": pa.array([d["links"]["dashboard"] or "" for d in docs], pa.string()),
            "runbook": pa.array([d["links"]["runbook"] or "" for d in docs], pa.string()),
            "predicted_value": col("predicted_value", pa.float64()),
            "predicted_window_start": col("predicted_window_start", _S),
            "evaluated_at": col("evaluated_at", _TS), "trigger_arrival": col("trigger_arrival", _TS),
        })  # fmt: skip

    @staticmethod
    def supervision_tables(events: list[dict], tickets: list[SupervisionTicket], now: datetime) -> tuple[pa.Table, pa.Table]:
        ev = pa.table({
            "ticket_id": pa.array([e["ticket_id"] for e in events], pa.string()),
            "action": pa.array([e["action"] for e in events], pa.string()),
            "status": pa.array([e["status"] for e in events], pa.string()),
            "at": pa.array([e["at"] for e in events], _TS),
            "by": pa.array([e["by"] for e in events], pa.string()),
            "assignee": pa.array([e["assignee"] or "" for e in events], pa.string()),
            "note": pa.array([e["note"] for e in events], pa.string()),
            "alert_id": pa.array([e["alert_id"] for e in events], pa.string()),
            "fingerprint": pa.array([e["fingerprint"] for e in events], pa.string()),
            "rule": pa.array([e["rule"] for e in events], pa.string()),
            "alert_status": pa.array([e["alert_status"] for e in events], pa.string()),
            "closed_while_bad": pa.array([e["closed_while_bad"] for e in events], pa.bool_()),
            "time_to_ack_s": pa.array([e["time_to_ack_s"] for e in events], pa.float64()),
            "time_to_close_s": pa.array([e["time_to_close_s"] for e in events], pa.float64()),
        })  # fmt: skip
        rows = [t.as_dict() for t in tickets]
        names = list(SupervisionTicket.__dataclass_fields__)
        types = {"opened_at": _TS, "acknowledged_at": _TS, "closed_at": _TS, "closed_while_bad": pa.bool_(),
                 "time_to_ack_s": pa.float64(), "time_to_close_s": pa.float64()}  # fmt: skip
        tk = pa.table({n: pa.array([r[n] for r in rows], types.get(n, pa.string())) for n in names}
                      | {"updated_at": pa.array([now] * len(rows), _TS)})  # fmt: skip
        return ev, tk

    # -- restart -------------------------------------------------------------------------
    def restore(self, writer: Writer, watermark: datetime | None) -> None:
        """Stored partials of the rule windows within the state horizon, alert statuses, open tickets."""
        db, client = writer.database, writer.client
        if self.windows:
            # the state horizon back from the newest stored window (event time: a replay of old data works too)
            counters = ", ".join(f"argMax({c}, version)" for c in COUNTERS)
            rows = client.query(
                f"SELECT window, window_start, window_end, province, city, district, channel, business_line, writer, "
                f"{counters} FROM {db}.indicator_cells WHERE window IN %(w)s AND window_end >= "
                f"(SELECT max(window_end) FROM {db}.indicator_cells WHERE window IN %(w)s) - toIntervalSecond(%(h)s) "
                f"GROUP BY window, window_start, window_end, province, city, district, channel, business_line, writer "
                f"ORDER BY window_start",
                parameters={"w": self.windows, "h": int(self.settings.state_horizon.total_seconds())},
            ).result_rows
            updates = [
                CellUpdate(r[0], int(_epoch(r[1])), int(_epoch(r[2])), r[3], r[4], r[5], r[6], r[7], int(r[8]),
                           np.array(r[9:], dtype=np.float64))
                for r in rows
            ]  # fmt: skip
            # Replaying the stored cells rebuilds every rule's windows and state (its transitions were
            # announced before the restart and are not again); then the stored statuses win, so an alert
            # that was firing stays firing until the stream resolves it, and is announced when it does.
            self.engine.apply(updates, 0 if watermark is None else int(watermark.timestamp()))
            statuses = client.query(
                f"SELECT rule, fingerprint, argMax(status, evaluated_at), argMax(since, evaluated_at), "
                f"argMax(labels, evaluated_at) FROM {db}.alerts GROUP BY rule, fingerprint"
            ).result_rows
            rules = {r.name: r for r in self.settings.rules}
            for rule, _fp, status, since, labels in statuses:
                if rule in rules:
                    scope = {k: v for k, v in labels.items() if k not in rules[rule].labels}
                    self.engine.restore_status(rule, scope, status, int(_epoch(since)))
            log.info("alerts: %d stored cells of windows %s and %d alert statuses restored",
                     len(updates), self.windows, len(statuses))  # fmt: skip
        tickets = client.query(
            f"SELECT {', '.join(SupervisionTicket.__dataclass_fields__)} FROM {db}.supervision_tickets FINAL"
        ).result_rows
        names = list(SupervisionTicket.__dataclass_fields__)
        loaded = []
        for row in tickets:
            d = dict(zip(names, row, strict=True))
            for k in ("opened_at", "acknowledged_at", "closed_at"):
                if isinstance(d[k], datetime) and d[k].tzinfo is None:
                    d[k] = d[k].replace(tzinfo=timezone.utc)
            loaded.append(SupervisionTicket(**d))
        self.book.load(loaded)


def _epoch(v) -> float:
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp()
    return float(v)
