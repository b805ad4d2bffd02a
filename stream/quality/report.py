"""Data quality per source system and arrival window, computed in ClickHouse.

For each window of *arrival* time (the Kafka record timestamp: a rejected event
may carry no valid event time) and each source system, :func:`quality_report`
gives

- **volume**: accepted events, rejected events by reason code (see
  :mod:`stream.ingest.decode`);
- **completeness**: ``missing_mandatory`` (rejects with reason
  ``missing_field``) and ``missing_optional`` (empty optional fields among
  accepted events, as listed once in :data:`OPTIONAL_FIELDS`);
- **validity**: ``invalid``, every other reject (:data:`INVALID_REASONS`, plus
  :data:`UNATTRIBUTABLE_REASONS`, which name no source and so land under
  source system ``''``, "unattributed");
- **timeliness**: arrival lag (Kafka timestamp - event time, accepted events)
  p50/p95/p99 in seconds (t-digest, approximate) and ``late``, the events
  arriving later than ``lateness``;
- **duplicates**: upstream resends dropped by ingest, not counting redeliveries
  after a crash (a duplicate whose Kafka position is stored in a raw table);
- **lifecycle findings** by kind, from ``ticket_state``, grouped by the source
  system of the step at fault and windowed by the ticket's last event time;
- derived rates (:class:`SourceQuality` properties).

Every figure is an aggregate query over the ReplacingMergeTree tables (read
with FINAL); Python only merges the aggregated rows. :func:`store_report`
writes the rows to ``quality_reports``; :func:`format_report` and
:func:`report_json` render them.

>>> from datetime import datetime, timezone
>>> row = SourceQuality(datetime(2026, 11, 20, tzinfo=timezone.utc), 86400, "CRM", accepted=95,
...                     rejected_by_reason={"missing_field": 3, "bad_time": 2}, duplicates=5)
>>> row.rejected, row.missing_mandatory, row.invalid, row.completeness_pct, row.validity_pct, row.duplicate_pct
(5, 3, 2, 97.0, 98.0, 4.762)
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from clickhouse_connect.driver.client import Client

#: reject reasons counted as incompleteness (a mandatory field is missing)
MANDATORY_REASONS: tuple[str, ...] = ("missing_field",)
#: reject reasons counted as invalidity; any reason not in MANDATORY_REASONS counts as invalid too
INVALID_REASONS: tuple[str, ...] = (
    "unknown_code",
    "out_of_range",
    "bad_time",
    "unsupported_version",
    "invalid_value",
    "unknown_field",
)
#: reasons whose record cannot be attributed to a source system (reported under UNATTRIBUTED)
UNATTRIBUTABLE_REASONS: tuple[str, ...] = ("not_json", "not_object", "empty_message")
UNATTRIBUTED = ""

_DIMENSIONS = ("overall_service", "reach_speed", "ivr_menu", "agent_attitude", "agent_ability", "call_outcome")


@dataclass(frozen=True)
class OptionalField:
    """An optional field of a raw table: where it is expected, and how an empty one looks (SQL)."""

    name: str
    expected: str  # SQL condition: the rows on which the field should be filled
    missing: str  # SQL condition: the field is empty


#: The optional fields whose absence counts against completeness, per raw table (the one place to change).
OPTIONAL_FIELDS: dict[str, tuple[OptionalField, ...]] = {
    "ticket_events": (
        # a withdrawn complaint has no root cause to report
        OptionalField("problem_location", "step = 'closed' AND closure_type != 'withdrawn'", "problem_location = ''"),
    ),
    "satisfaction_events": (
        OptionalField("nps", "1", "nps IS NULL"),
        OptionalField("problem_solved", "1", "problem_solved IS NULL"),
        OptionalField("business_line", "1", "business_line = ''"),
        OptionalField("customer_tier", "1", "customer_tier = ''"),
        OptionalField("plan", "1", "plan = ''"),
        *(
            OptionalField(f"dimensions.{d}", "channel = 'hotline'", f"dim_{d} IS NULL")
            for d in _DIMENSIONS
        ),
    ),
}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 3) if whole else None


@dataclass
class SourceQuality:
    """Data-quality figures of one source system in one arrival window."""

    window_start: datetime
    window_seconds: int
    source_system: str  # '' = unattributed (the record named no source)
    accepted: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    missing_optional: int = 0
    missing_optional_by_field: dict[str, int] = field(default_factory=dict)
    optional_expected: int = 0  # optional-field slots among accepted events (the fill-rate denominator)
    lag_p50_s: float | None = None
    lag_p95_s: float | None = None
    lag_p99_s: float | None = None
    late: int = 0
    lateness_s: int = 600
    duplicates: int = 0
    findings: dict[str, int] = field(default_factory=dict)

    @property
    def window_end(self) -> datetime:
        return self.window_start + timedelta(seconds=self.window_seconds)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def missing_mandatory(self) -> int:
        return sum(self.rejected_by_reason.get(r, 0) for r in MANDATORY_REASONS)

    @property
    def invalid(self) -> int:
        return self.rejected - self.missing_mandatory

    @property
    def received(self) -> int:
        """Distinct deliveries: accepted plus rejected (resends not counted)."""
        return self.accepted + self.rejected

    @property
    def completeness_pct(self) -> float | None:
        """Share of received events carrying every mandatory field."""
        return _pct(self.received - self.missing_mandatory, self.received)

    @property
    def optional_fill_pct(self) -> float | None:
        """Share of expected optional fields (:data:`OPTIONAL_FIELDS`) that were filled."""
        return _pct(self.optional_expected - self.missing_optional, self.optional_expected)

    @property
    def validity_pct(self) -> float | None:
        """Share of received events not rejected as invalid."""
        return _pct(self.received - self.invalid, self.received)

    @property
    def duplicate_pct(self) -> float | None:
        """Share of all deliveries that were upstream resends."""
        return _pct(self.duplicates, self.received + self.duplicates)

    @property
    def late_pct(self) -> float | None:
        return _pct(self.late, self.accepted)

    @property
    def findings_total(self) -> int:
        return sum(self.findings.values())


# -- queries ---------------------------------------------------------------------------------
def _window(col: str, seconds: int) -> str:
    return f"toDateTime(intDiv(toUnixTimestamp({col}), {seconds}) * {seconds}, 'UTC')"


def _since(col: str, since: datetime | None) -> str:
    if since is None:
        return "1"
    return f"{col} >= toDateTime64('{since.strftime('%Y-%m-%d %H:%M:%S')}', 3, 'UTC')"


def _utc(value: Any) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _table_exists(client: Client, database: str, table: str) -> bool:
    rows = client.query(
        f"SELECT count() FROM system.tables WHERE database = '{database}' AND name = '{table}'"
    ).result_rows
    return bool(rows and rows[0][0])


def quality_report(
    client: Client,
    database: str,
    window: timedelta = timedelta(days=1),
    since: datetime | None = None,
    lateness: timedelta = timedelta(minutes=10),
) -> list[SourceQuality]:
    """One :class:`SourceQuality` per (arrival window, source system), oldest window first.

    Windows are aligned to the epoch (UTC midnight for a day). ``since`` (aware, or
    naive = UTC) is rounded down to its window, so the first window is complete.
    """
    if not _IDENT.match(database):
        raise ValueError(f"not a database name: {database!r}")
    seconds = int(window.total_seconds())
    if seconds < 1:
        raise ValueError("window must be at least one second")
    if since is not None:
        since = _utc(since)
        epoch = int(since.timestamp()) // seconds * seconds
        since = datetime.fromtimestamp(epoch, timezone.utc)
    late_s = lateness.total_seconds()
    db = database
    rows: dict[tuple[datetime, str], SourceQuality] = {}

    def row(w: datetime, source: str) -> SourceQuality:
        key = (_utc(w), source)
        if key not in rows:
            rows[key] = SourceQuality(key[0], seconds, source, lateness_s=int(late_s))
        return rows[key]

    arrival = _window("kafka_timestamp", seconds)
    where = _since("kafka_timestamp", since)
    lag = "(toUnixTimestamp64Milli(kafka_timestamp) - toUnixTimestamp64Milli(event_time)) / 1000.0"

    # accepted events and timeliness, over both raw tables together (a source may publish both)
    accepted = client.query(
        f"SELECT w, source_system, count(), quantilesTDigest(0.5, 0.95, 0.99)(lag), countIf(lag > {late_s}) FROM ("
        f" SELECT {arrival} AS w, source_system, {lag} AS lag FROM {db}.ticket_events FINAL WHERE {where}"
        f" UNION ALL"
        f" SELECT {arrival} AS w, source_system, {lag} AS lag FROM {db}.satisfaction_events FINAL WHERE {where}"
        f") GROUP BY w, source_system"
    ).result_rows
    for w, source, n, q, late in accepted:
        r = row(w, source)
        r.accepted, r.late = int(n), int(late)
        r.lag_p50_s, r.lag_p95_s, r.lag_p99_s = (round(float(x), 3) for x in q)

    # completeness of optional fields, per raw table
    for table, fields in OPTIONAL_FIELDS.items():
        exprs = ", ".join(f"countIf({f.expected}), countIf(({f.expected}) AND ({f.missing}))" for f in fields)
        result = client.query(
            f"SELECT {arrival} AS w, source_system, {exprs} FROM {db}.{table} FINAL WHERE {where} "
            f"GROUP BY w, source_system"
        ).result_rows
        for w, source, *counts in result:
            r = row(w, source)
            for f, expected, missing in zip(fields, counts[::2], counts[1::2]):
                r.optional_expected += int(expected)
                if missing:
                    r.missing_optional += int(missing)
                    r.missing_optional_by_field[f.name] = r.missing_optional_by_field.get(f.name, 0) + int(missing)

    # rejections by reason (dead letters are keyed by Kafka position: a redelivery counts once)
    rejected = client.query(
        f"SELECT {arrival} AS w, source_system, reason, count() FROM {db}.dead_letters FINAL WHERE {where} "
        f"GROUP BY w, source_system, reason"
    ).result_rows
    for w, source, reason, n in rejected:
        r = row(w, source)
        r.rejected_by_reason[reason] = r.rejected_by_reason.get(reason, 0) + int(n)

    # upstream resends; a duplicate whose own Kafka position is stored in a raw table is a redelivery
    positions = " UNION ALL ".join(
        f"SELECT event_id, kafka_partition, kafka_offset FROM {db}.{t} "
        f"WHERE event_id IN (SELECT event_id FROM {db}.duplicates)"
        for t in ("ticket_events", "satisfaction_events")
    )
    duplicates = client.query(
        f"SELECT {arrival} AS w, source_system, count() FROM {db}.duplicates FINAL "
        f"WHERE {where} AND (event_id, kafka_partition, kafka_offset) NOT IN ({positions}) "
        f"GROUP BY w, source_system"
    ).result_rows
    for w, source, n in duplicates:
        row(w, source).duplicates = int(n)

    # lifecycle findings, by the source system of the step at fault, windowed by the ticket's last event
    if _table_exists(client, db, "ticket_state"):
        findings = client.query(
            f"SELECT {_window('last_event_time', seconds)} AS w, source, kind, count() "
            f"FROM {db}.ticket_state FINAL ARRAY JOIN finding_kinds AS kind, finding_sources AS source "
            f"WHERE {_since('last_event_time', since)} GROUP BY w, source, kind"
        ).result_rows
        for w, source, kind, n in findings:
            r = row(w, source)
            r.findings[kind] = r.findings.get(kind, 0) + int(n)

    for r in rows.values():
        r.rejected_by_reason = dict(sorted(r.rejected_by_reason.items()))
        r.missing_optional_by_field = dict(sorted(r.missing_optional_by_field.items()))
        r.findings = dict(sorted(r.findings.items()))
    return sorted(rows.values(), key=lambda r: (r.window_start, r.source_system == UNATTRIBUTED, r.source_system))


# -- rendering --------------------------------------------------------------------------------
def _label(source: str) -> str:
    return source or "(unattributed)"


def report_json(rows: list[SourceQuality]) -> list[dict[str, Any]]:
    """JSON-ready dicts, one per row, counts and derived rates included."""
    return [
        {
            "window_start": r.window_start.isoformat(),
            "window_end": r.window_end.isoformat(),
            "source_system": r.source_system,
            "accepted": r.accepted,
            "rejected": r.rejected,
            "rejected_by_reason": dict(r.rejected_by_reason),
            "completeness": {
                "missing_mandatory": r.missing_mandatory,
                "missing_optional": r.missing_optional,
                "missing_optional_by_field": dict(r.missing_optional_by_field),
                "optional_expected": r.optional_expected,
                "completeness_pct": r.completeness_pct,
                "optional_fill_pct": r.optional_fill_pct,
            },
            "validity": {"invalid": r.invalid, "validity_pct": r.validity_pct},
            "timeliness": {
                "lag_p50_s": r.lag_p50_s,
                "lag_p95_s": r.lag_p95_s,
                "lag_p99_s": r.lag_p99_s,
                "late": r.late,
                "lateness_s": r.lateness_s,
                "late_pct": r.late_pct,
            },
            "duplicates": {"duplicates": r.duplicates, "duplicate_pct": r.duplicate_pct},
            "lifecycle_findings": dict(r.findings),
        }
        for r in rows
    ]


def report_from_json(docs: list[dict[str, Any]]) -> list[SourceQuality]:
    """The inverse of :func:`report_json` (e.g. rows fetched from a worker, to print as text)."""
    out = []
    for d in docs:
        start = _utc(datetime.fromisoformat(d["window_start"]))
        end = _utc(datetime.fromisoformat(d["window_end"]))
        c, t = d["completeness"], d["timeliness"]
        out.append(
            SourceQuality(
                start, int((end - start).total_seconds()), d["source_system"], accepted=d["accepted"],
                rejected_by_reason=dict(d["rejected_by_reason"]), missing_optional=c["missing_optional"],
                missing_optional_by_field=dict(c["missing_optional_by_field"]),
                optional_expected=c["optional_expected"], lag_p50_s=t["lag_p50_s"], lag_p95_s=t["lag_p95_s"],
                lag_p99_s=t["lag_p99_s"], late=t["late"], lateness_s=t["lateness_s"],
                duplicates=d["duplicates"]["duplicates"], findings=dict(d["lifecycle_findings"]),
            )  # fmt: skip
        )
    return out


_COLUMNS = (  # header, width
    ("window", 16), ("source", 14), ("accepted", 9), ("rejected", 8), ("miss.mand", 9), ("miss.opt", 8),
    ("invalid", 7), ("dup", 6), ("late", 6), ("lag p50", 8), ("p95", 8), ("p99", 8), ("compl%", 7),
    ("fill%", 6), ("valid%", 7), ("dup%", 6), ("findings", 8),
)  # fmt: skip


def _fmt(value: Any, width: int, left: bool = False) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.1f}" if abs(value) < 10_000 else f"{value:.0f}"
    else:
        text = str(value)
    return text.ljust(width) if left else text.rjust(width)


def _line(values: list[Any], details: str = "") -> str:
    cells = [_fmt(v, w, left=i < 2) for i, (v, (_, w)) in enumerate(zip(values, _COLUMNS))]
    return ("  ".join(cells) + ("  " + details if details else "")).rstrip()


def _details(r: SourceQuality) -> str:
    parts = []
    if r.rejected_by_reason:
        parts.append("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(r.rejected_by_reason.items())))
    if r.findings:
        parts.append("findings: " + ", ".join(f"{k} {v}" for k, v in sorted(r.findings.items())))
    return "; ".join(parts)


def _values(r: SourceQuality, window: str, source: str) -> list[Any]:
    return [
        window, source, r.accepted, r.rejected, r.missing_mandatory, r.missing_optional, r.invalid, r.duplicates,
        r.late, r.lag_p50_s, r.lag_p95_s, r.lag_p99_s, r.completeness_pct, r.optional_fill_pct, r.validity_pct,
        r.duplicate_pct, r.findings_total,
    ]  # fmt: skip


def _total(rows: list[SourceQuality]) -> SourceQuality:
    first = rows[0]
    t = SourceQuality(first.window_start, first.window_seconds, "(all)", lateness_s=first.lateness_s)
    for r in rows:
        t.accepted += r.accepted
        t.missing_optional += r.missing_optional
        t.optional_expected += r.optional_expected
        t.late += r.late
        t.duplicates += r.duplicates
        for k, v in r.rejected_by_reason.items():
            t.rejected_by_reason[k] = t.rejected_by_reason.get(k, 0) + v
        for k, v in r.findings.items():
            t.findings[k] = t.findings.get(k, 0) + v
    t.rejected_by_reason = dict(sorted(t.rejected_by_reason.items()))
    t.findings = dict(sorted(t.findings.items()))
    return t  # lag percentiles do not add up: left empty


def format_report(rows: list[SourceQuality]) -> str:
    """A fixed-width table: one line per window and source system, a total line per window.

    Lags are in seconds; ``late`` counts events arriving more than the lateness after
    their event time; ``compl%`` is events with every mandatory field, ``fill%`` filled
    optional fields, ``valid%`` events not rejected as invalid, ``dup%`` resends among deliveries.
    """
    header = _line([h for h, _ in _COLUMNS], "details")
    out = [header, "-" * len(header)]
    if not rows:
        out.append("(no data)")
        return "\n".join(out)
    by_window: dict[datetime, list[SourceQuality]] = defaultdict(list)
    for r in rows:
        by_window[r.window_start].append(r)
    for start, group in sorted(by_window.items()):
        label = start.strftime("%Y-%m-%d %H:%M")
        for r in group:
            out.append(_line(_values(r, label, _label(r.source_system)), _details(r)))
        total = _total(group)
        out.append(_line(_values(total, label, "(all)"), _details(total)))
        out.append("")
    late = {r.lateness_s for r in rows}
    out.append(f"lags in seconds (arrival - event time); late = more than {', '.join(f'{s}s' for s in sorted(late))}")
    return "\n".join(out)


# -- storage ----------------------------------------------------------------------------------
_STORED = (
    "window_start", "window_seconds", "source_system", "accepted", "rejected", "rejected_by_reason",
    "missing_mandatory", "missing_optional", "missing_optional_by_field", "optional_expected", "invalid",
    "lag_p50_s", "lag_p95_s", "lag_p99_s", "late", "lateness_s", "duplicates", "findings", "completeness_pct",
    "optional_fill_pct", "validity_pct", "duplicate_pct", "late_pct", "computed_at",
)  # fmt: skip


def store_report(
    client: Client, database: str, rows: list[SourceQuality], computed_at: datetime | None = None
) -> int:
    """Insert ``rows`` into ``quality_reports``; a recomputed window replaces the stored one. Returns rows written."""
    if not _IDENT.match(database):
        raise ValueError(f"not a database name: {database!r}")
    if not rows:
        return 0
    now = computed_at or datetime.now(timezone.utc)
    data = [
        [
            r.window_start, r.window_seconds, r.source_system, r.accepted, r.rejected, r.rejected_by_reason,
            r.missing_mandatory, r.missing_optional, r.missing_optional_by_field, r.optional_expected, r.invalid,
            r.lag_p50_s, r.lag_p95_s, r.lag_p99_s, r.late, r.lateness_s, r.duplicates, r.findings,
            r.completeness_pct, r.optional_fill_pct, r.validity_pct, r.duplicate_pct, r.late_pct, now,
        ]  # fmt: skip
        for r in rows
    ]
    client.insert(f"{database}.quality_reports", data, column_names=list(_STORED))
    return len(data)


def stored_report(client: Client, database: str, since: datetime | None = None) -> list[SourceQuality]:
    """The latest stored report rows (FINAL), oldest window first, as :class:`SourceQuality`."""
    if not _IDENT.match(database):
        raise ValueError(f"not a database name: {database!r}")
    where = "1" if since is None else f"window_start >= toDateTime('{_utc(since):%Y-%m-%d %H:%M:%S}', 'UTC')"
    result = client.query(
        "SELECT window_start, window_seconds, source_system, accepted, rejected_by_reason, missing_optional, "
        "missing_optional_by_field, optional_expected, lag_p50_s, lag_p95_s, lag_p99_s, late, lateness_s, "
        f"duplicates, findings FROM {database}.quality_reports FINAL WHERE {where} "
        "ORDER BY window_start, source_system = '', source_system, window_seconds"
    ).result_rows
    return [
        SourceQuality(
            _utc(w), int(ws), src, accepted=int(acc), rejected_by_reason={k: int(v) for k, v in rej.items()},
            missing_optional=int(mo), missing_optional_by_field={k: int(v) for k, v in mof.items()},
            optional_expected=int(oe), lag_p50_s=p50, lag_p95_s=p95, lag_p99_s=p99, late=int(late),
            lateness_s=int(ls), duplicates=int(dup), findings={k: int(v) for k, v in fnd.items()},
        )  # fmt: skip
        for w, ws, src, acc, rej, mo, mof, oe, p50, p95, p99, late, ls, dup, fnd in result
    ]
