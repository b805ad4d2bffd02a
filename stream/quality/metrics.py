"""The latest data-quality window as Prometheus gauges (served with the worker's other metrics).

Metric names (dashboards and alerts refer to them):

- ``cxstream_quality_events{source_system, kind}``: counts in the latest arrival window.
  ``kind`` is ``accepted``, ``rejected``, ``missing_mandatory``, ``missing_optional``,
  ``invalid``, ``duplicates``, ``late``, ``findings`` (all lifecycle findings), plus
  ``rejected:<reason>`` per reject reason and ``finding:<kind>`` per lifecycle finding kind.
- ``cxstream_quality_arrival_lag_seconds{source_system, quantile}``: arrival lag
  (Kafka timestamp - event time) at quantile ``0.5``, ``0.95``, ``0.99``.
- ``cxstream_quality_ratio{source_system, measure}``: the derived percentages as ratios in
  [0, 1]; ``measure`` is ``completeness``, ``optional_fill``, ``validity``, ``duplicate``, ``late``.
- ``cxstream_quality_window_start_seconds``: start (epoch seconds) of the exported window;
  stale when the report stops being refreshed.

Rejects that name no source system carry ``source_system="unattributed"``. Each
:func:`export` replaces every series, so a source absent from the latest window
disappears instead of keeping an old value.

>>> from datetime import datetime, timezone
>>> from stream.quality.report import SourceQuality
>>> t = datetime(2026, 11, 20, tzinfo=timezone.utc)
>>> export([SourceQuality(t, 86400, "CRM", accepted=7, rejected_by_reason={"bad_time": 1}, lag_p50_s=1.5),
...         SourceQuality(t, 86400, "", rejected_by_reason={"not_json": 2})])
datetime.datetime(2026, 11, 20, 0, 0, tzinfo=datetime.timezone.utc)
>>> value = lambda source, kind: QUALITY_EVENTS.labels(source, kind)._value.get()
>>> value("CRM", "rejected:bad_time"), value("unattributed", "invalid")
(1.0, 2.0)
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Gauge

from .report import SourceQuality

QUALITY_EVENTS = Gauge(
    "cxstream_quality_events",
    "Data quality in the latest arrival window, by source system and kind of count.",
    ["source_system", "kind"],
)
QUALITY_LAG = Gauge(
    "cxstream_quality_arrival_lag_seconds",
    "Arrival lag (Kafka timestamp - event time) of accepted events in the latest window, by quantile.",
    ["source_system", "quantile"],
)
QUALITY_RATIO = Gauge(
    "cxstream_quality_ratio",
    "Derived data-quality ratios (0..1) in the latest window: completeness, optional_fill, validity, duplicate, late.",
    ["source_system", "measure"],
)
QUALITY_WINDOW = Gauge("cxstream_quality_window_start_seconds", "Start of the window the quality gauges describe.")

UNATTRIBUTED_LABEL = "unattributed"


def _counts(r: SourceQuality) -> dict[str, int]:
    out = {
        "accepted": r.accepted,
        "rejected": r.rejected,
        "missing_mandatory": r.missing_mandatory,
        "missing_optional": r.missing_optional,
        "invalid": r.invalid,
        "duplicates": r.duplicates,
        "late": r.late,
        "findings": r.findings_total,
    }
    out.update({f"rejected:{reason}": n for reason, n in r.rejected_by_reason.items()})
    out.update({f"finding:{kind}": n for kind, n in r.findings.items()})
    return out


def export(rows: list[SourceQuality]) -> datetime | None:
    """Set the gauges from the latest window in ``rows``; returns that window's start (None: no rows)."""
    for gauge in (QUALITY_EVENTS, QUALITY_LAG, QUALITY_RATIO):
        gauge.clear()
    if not rows:
        return None
    latest = max(r.window_start for r in rows)
    QUALITY_WINDOW.set(latest.timestamp())
    for r in rows:
        if r.window_start != latest:
            continue
        source = r.source_system or UNATTRIBUTED_LABEL
        for kind, n in _counts(r).items():
            QUALITY_EVENTS.labels(source, kind).set(n)
        for q, value in (("0.5", r.lag_p50_s), ("0.95", r.lag_p95_s), ("0.99", r.lag_p99_s)):
            if value is not None:
                QUALITY_LAG.labels(source, q).set(value)
        for measure, pct in (
            ("completeness", r.completeness_pct),
            ("optional_fill", r.optional_fill_pct),
            ("validity", r.validity_pct),
            ("duplicate", r.duplicate_pct),
            ("late", r.late_pct),
        ):
            if pct is not None:
                QUALITY_RATIO.labels(source, measure).set(pct / 100)
    return latest
