"""Data quality per source system: the report recovers exactly the defects the simulator planted.

Simulated traffic goes through the real embedded broker and the ingest agent into
chDB; the report (SQL over the stored tables) must then give, per source system,
the planted rejects by reason, resends, valid events, missing optional fields,
and arrival lags matching the planted lag model.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from stream.quality import (
    format_report,
    quality_report,
    report_from_json,
    report_json,
    store_report,
    stored_report,
)
from stream.quality.metrics import QUALITY_EVENTS, QUALITY_LAG, export
from stream.quality.report import SourceQuality
from stream.simulate import generate
from stream.simulate.publish import publish
from stream.sink.clickhouse import connect

from .conftest import DEFECT_REASON, SIM_START, run_agent

DIMENSIONS = ("overall_service", "reach_speed", "ivr_menu", "agent_attitude", "agent_ability", "call_outcome")
DB = "cxstream"


async def _ingest(broker, topology, data_dir, records, expected: int) -> dict[str, int]:
    await publish(records, bootstrap_servers=broker.bootstrap, topic_names=_topics(topology))
    return dict((await run_agent(broker, topology, data_dir, expected)).progress.totals)


def _topics(topology) -> dict[str, str]:
    return {k: t.name for k, t in topology.source_topics().items()}


def _expected(sim):
    """What the report must find, derived from the simulator's own records and plants."""
    planted = sim.plants.describe()["data_quality"]
    rejected: dict[str, Counter] = defaultdict(Counter)
    for source, defects in planted["defects_by_source"].items():
        for defect, n in defects.items():
            rejected["" if defect == "not_json" else source][DEFECT_REASON[defect]] += n
    accepted, missing, late = Counter(), defaultdict(Counter), Counter()
    lags: dict[str, list[float]] = defaultdict(list)
    for r in sim.records:
        if r.kind != "valid":
            continue
        doc = json.loads(r.value)
        source = doc["source_system"]
        accepted[source] += 1
        lag = r.arrival_ms / 1000 - datetime.fromisoformat(doc["event_time"]).timestamp()
        lags[source].append(lag)
        late[source] += lag > 600
        if r.stream == "ticket_events":
            if doc["step"] == "closed" and doc["closure_type"] != "withdrawn" and "problem_location" not in doc:
                missing[source]["problem_location"] += 1
        else:
            for name in ("nps", "problem_solved", "business_line", "customer_tier", "plan"):
                missing[source][name] += name not in doc
            if doc["channel"] == "hotline":
                for d in DIMENSIONS:
                    missing[source][f"dimensions.{d}"] += d not in doc.get("dimensions", {})
    missing = {s: {k: v for k, v in c.items() if v} for s, c in missing.items()}
    return rejected, accepted, missing, late, lags, planted["resends_by_source"]


def _per_source(rows: list[SourceQuality]) -> dict[str, SourceQuality]:
    """Rows summed over windows (late arrivals spill past the simulated day)."""
    out: dict[str, SourceQuality] = {}
    for r in rows:
        t = out.setdefault(r.source_system, SourceQuality(r.window_start, 0, r.source_system))
        t.accepted += r.accepted
        t.duplicates += r.duplicates
        t.late += r.late
        t.missing_optional += r.missing_optional
        for attr in ("rejected_by_reason", "missing_optional_by_field", "findings"):
            total = getattr(t, attr)
            for k, v in getattr(r, attr).items():
                total[k] = total.get(k, 0) + v
    return out


@pytest.mark.integration
async def test_report_recovers_the_planted_defects(broker, topology, topics, tmp_path):
    sim = generate(6000, seed=17, start=SIM_START, malformed_share=0.05, resend_share=0.02)
    counts = sim.summary()
    totals = await _ingest(broker, topology, tmp_path, sim.records, expected=6000)
    assert totals == {"ingested": counts["valid"], "rejected": counts["malformed"], "duplicate": counts["resent"]}
    rejected, accepted, missing, late, lags, resends = _expected(sim)

    client = connect(f"chdb:///{tmp_path}/clickhouse")
    try:
        rows = quality_report(client, DB)
        got = _per_source(rows)
        sources = set(accepted) | set(rejected)
        assert set(got) == sources and "" in got  # not_json records name no source
        for s in sorted(sources):
            r = got[s]
            assert r.rejected_by_reason == dict(rejected.get(s, {})), s
            assert r.accepted == accepted.get(s, 0), s
            assert r.duplicates == resends.get(s, 0), s
            assert r.missing_optional_by_field == missing.get(s, {}), s
            assert r.late == late.get(s, 0), s
        assert got[""].invalid == got[""].rejected == rejected[""]["not_json"] and got[""].accepted == 0
        assert sum(r.missing_mandatory for r in got.values()) == counts["malformed_by_defect"]["missing_field"]

        # Timeliness: per window and source, the percentiles follow the planted lag model.
        model = sim.plants.describe()["arrival_lag"]["base_seconds_by_source"]
        day = [r for r in rows if r.window_start == SIM_START and r.source_system]
        assert {r.source_system for r in day} == set(accepted)
        by_source = {r.source_system: r for r in day}
        for s, r in by_source.items():
            lo, hi = model[s]
            assert lo * 0.9 <= r.lag_p50_s <= hi, (s, r.lag_p50_s)
            assert r.lag_p50_s <= r.lag_p95_s <= r.lag_p99_s
            planted_p50 = sorted(lags[s])[len(lags[s]) // 2]
            assert abs(r.lag_p50_s - planted_p50) <= 0.25 * planted_p50 + 1, (s, r.lag_p50_s, planted_p50)
        assert by_source["FIELD"].lag_p50_s > by_source["NOC"].lag_p50_s > by_source["CRM"].lag_p50_s
        assert by_source["SURVEY"].lag_p50_s > 10 * by_source["APP"].lag_p50_s

        # Other windows and `since` only regroup the same events.
        hourly = quality_report(client, DB, window=timedelta(hours=1))
        assert len({r.window_start for r in hourly}) >= 24
        assert {s: (r.accepted, r.rejected, r.duplicates, r.late) for s, r in _per_source(hourly).items()} == {
            s: (r.accepted, r.rejected, r.duplicates, r.late) for s, r in got.items()
        }
        later = quality_report(client, DB, window=timedelta(hours=1), since=SIM_START + timedelta(hours=12, minutes=30))
        assert min(r.window_start for r in later) == SIM_START + timedelta(hours=12)
        first = later[0].window_start
        assert sum(r.accepted for r in later) == sum(r.accepted for r in hourly if r.window_start >= first)

        # A redelivery after a crash (the duplicate's own position is stored) is not an upstream resend.
        client.command(
            f"INSERT INTO {DB}.duplicates SELECT 'cx.ticket-events.v1', kafka_partition, kafka_offset, kafka_timestamp,"
            f" event_id, event_time, source_system, now64(3) FROM {DB}.ticket_events FINAL LIMIT 40"
        )
        assert {s: r.duplicates for s, r in _per_source(quality_report(client, DB)).items()} == {
            s: r.duplicates for s, r in got.items()
        }

        # Lifecycle findings: newest ticket state wins; grouped by the finding's source, windowed by last event.
        t0 = "2026-11-20 10:00:00"
        columns = "ticket_id, last_event_time, finding_kinds, finding_sources, updated_at"
        state = f"INSERT INTO {DB}.ticket_state ({columns}) "
        client.command(  # two inserts: one block would be collapsed on insert, hiding a missing FINAL
            state + f"VALUES ('QA1', '{t0}', ['missing_create', 'time_backwards'], ['QA_SRC', 'QA_SRC'], '{t0}'),"
            f" ('QA2', '{t0}', ['close_without_create', 'step_after_close'], ['QA_SRC', 'QA_OTHER'], '{t0}')"
        )
        client.command(state + f"VALUES ('QA1', '{t0}', ['close_without_create'], ['QA_SRC'], '2026-11-20 11:00:00')")
        with_findings = {r.source_system: r for r in quality_report(client, DB) if r.window_start == SIM_START}
        assert with_findings["QA_SRC"].findings == {"close_without_create": 2}
        assert with_findings["QA_OTHER"].findings == {"step_after_close": 1}
        assert with_findings["QA_SRC"].accepted == 0

        # Stored: the round trip keeps every figure; a recomputation replaces the stored rows.
        assert store_report(client, DB, rows, computed_at=datetime(2026, 11, 21, tzinfo=timezone.utc)) == len(rows)
        assert report_json(stored_report(client, DB)) == report_json(rows)
        newer = [r for r in rows if r.window_start == SIM_START]
        for r in newer:
            r.accepted += 1
        store_report(client, DB, newer, computed_at=datetime(2026, 11, 22, tzinfo=timezone.utc))
        back = stored_report(client, DB)
        assert len(back) == len(rows)
        assert {r.source_system: r.accepted for r in back if r.window_start == SIM_START} == {
            r.source_system: r.accepted for r in newer
        }
        hourly_back = store_report(client, DB, hourly)  # another window length is kept beside, not replacing
        assert len(stored_report(client, DB)) == len(rows) + hourly_back
    finally:
        client.close()


def _row(source: str, **kw) -> SourceQuality:
    return SourceQuality(SIM_START, 86400, source, **kw)


def test_format_report_one_line_per_source_and_a_total():
    rows = [
        _row("CRM", accepted=950, rejected_by_reason={"missing_field": 30, "bad_time": 20}, duplicates=10,
             lag_p50_s=0.8, lag_p95_s=2.7, lag_p99_s=412.0, late=4, missing_optional=12, optional_expected=300),
        _row("FIELD", accepted=90, rejected_by_reason={"unknown_code": 10}, lag_p50_s=95.3, lag_p95_s=280.0,
             lag_p99_s=700.5, findings={"step_after_close": 3}),
        _row("", rejected_by_reason={"not_json": 7}),
    ]  # fmt: skip
    text = format_report(rows)
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:4] == ["window", "source", "accepted", "rejected"] and "p99" in header and "details" in header
    crm = next(line for line in lines if " CRM " in line)
    assert crm.startswith("2026-11-20 00:00") and crm.split()[3:12] == ["950", "50", "30", "12", "20", "10", "4",
                                                                       "0.8", "2.7"]  # fmt: skip
    assert crm.split()[13:16] == ["97.0", "96.0", "98.0"] and "bad_time 20, missing_field 30" in crm
    field = next(line for line in lines if " FIELD " in line)
    assert "findings: step_after_close 3" in field and "95.3" in field
    unattributed = next(line for line in lines if "(unattributed)" in line)
    assert unattributed.split()[3:6] == ["0", "7", "0"] and "not_json 7" in unattributed
    total = next(line for line in lines if "(all)" in line)
    assert total.split()[3:11] == ["1040", "67", "30", "12", "37", "10", "4", "-"]
    assert [line.index("(all)") for line in lines if "(all)" in line] == [crm.index("CRM")]  # columns aligned
    assert format_report([]).endswith("(no data)")


def test_report_json_and_metrics_export():
    later = SIM_START + timedelta(days=1)
    rows = [
        _row("CRM", accepted=10, rejected_by_reason={"bad_time": 2}, lag_p50_s=1.0, lag_p95_s=2.0, lag_p99_s=3.0),
        SourceQuality(later, 86400, "CRM", accepted=5, duplicates=1, lag_p50_s=1.5, lag_p95_s=2.5, lag_p99_s=3.5,
                      findings={"missing_create": 2}),
        SourceQuality(later, 86400, "", rejected_by_reason={"not_json": 3}),
    ]  # fmt: skip
    doc = report_json(rows)
    json.dumps(doc)
    assert doc[0]["window_end"] == later.isoformat() and doc[0]["validity"] == {"invalid": 2, "validity_pct": 83.333}
    assert doc[1]["duplicates"] == {"duplicates": 1, "duplicate_pct": 16.667}
    assert doc[1]["lifecycle_findings"] == {"missing_create": 2}
    assert report_from_json(json.loads(json.dumps(doc))) == rows  # what the CLI gets from a worker

    assert export(rows) == later  # the latest window only
    assert QUALITY_EVENTS.labels("CRM", "accepted")._value.get() == 5
    assert QUALITY_EVENTS.labels("CRM", "finding:missing_create")._value.get() == 2
    assert QUALITY_EVENTS.labels("unattributed", "rejected:not_json")._value.get() == 3
    assert QUALITY_LAG.labels("CRM", "0.99")._value.get() == 3.5
    export(rows[:1])
    samples = {(s.labels["source_system"], s.labels["kind"]) for m in QUALITY_EVENTS.collect() for s in m.samples}
    assert ("unattributed", "rejected:not_json") not in samples and ("CRM", "rejected:bad_time") in samples
    with pytest.raises(ValueError):
        quality_report(None, "x; DROP TABLE y")
