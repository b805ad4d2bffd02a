"""Arrow column builders and the ClickHouse sink, on the embedded engine (chDB)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from stream.contract import SatisfactionEvent, TicketEvent
from stream.contract.export import EXAMPLES
from stream.ingest.batch import BatchSplitter
from stream.ingest.dedup import SeenIds
from stream.ingest.records import Accepted, RawRecord
from stream.simulate import generate
from stream.sink.clickhouse import Writer, connect, migrate, migrations
from stream.sink.columns import (
    SATISFACTION_INBOX_COLUMNS,
    TABLES,
    TICKET_INBOX_COLUMNS,
    dead_letter_table,
    satisfaction_table,
    ticket_table,
)

START = datetime(2026, 11, 20, tzinfo=timezone(timedelta(hours=8)))
RAW_TTL, DEAD_TTL = timedelta(days=3650), timedelta(days=30)
TOPICS = {"ticket_events": "cx.ticket-events.v1", "satisfaction_events": "cx.satisfaction-events.v1"}
CONTRACT_OF = {"cx.ticket-events.v1": "ticket_event", "cx.satisfaction-events.v1": "satisfaction_event"}
DIMS = ("overall_service", "reach_speed", "ivr_menu", "agent_attitude", "agent_ability", "call_outcome")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = connect("chdb:///" + str(tmp_path_factory.mktemp("chdb") / "ch"))
    try:
        yield c
    finally:
        c.close()  # chDB allows one data directory per process at a time


_db_counter = iter(range(1000))


@pytest.fixture
def db(client):
    """A fresh, migrated database in the module's chDB."""
    name = f"cxtest{next(_db_counter)}"
    migrate(client, name, RAW_TTL, DEAD_TTL)
    yield name
    client.command(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="module")
def batches():
    """A simulated, validated and deduplicated batch per contract, plus hand-made edge cases."""
    sim = generate(1500, seed=8, start=START)
    records = [RawRecord(TOPICS[r.stream], i % 3, i, 1_763_600_000_000 + i, r.key, r.value) for i, r in enumerate(sim.records)]
    out = BatchSplitter(CONTRACT_OF, lambda: SeenIds(3600, 10**6)).split(records)
    extra = {
        "ticket_event": [
            dict(EXAMPLES["ticket_event"][0], event_id="edge-t1", event_time="2026-11-20T09:15:00.123+08:00",
                 sla_deadline="2026-11-21T09:15:00.999+08:00", note="customer asked twice, 二次投诉\n\"again\" \\ \u00e9"),
            dict(EXAMPLES["ticket_event"][1], event_id="edge-t2", event_time="2026-11-20T16:40:00.001Z"),
        ],
        "satisfaction_event": [
            dict(EXAMPLES["satisfaction_event"][0], event_id="edge-s1", nps=0, problem_solved=False,
                 dimensions={"ivr_menu": 1, "call_outcome": 10}),
            {k: v for k, v in EXAMPLES["satisfaction_event"][0].items()
             if k not in ("dimensions", "nps", "problem_solved", "ticket_id", "plan", "business_line", "customer_tier")}
            | {"event_id": "edge-s2", "event_time": "2026-11-20T17:05:00.5-03:00"},
        ],
    }  # fmt: skip
    model = {"ticket_event": TicketEvent, "satisfaction_event": SatisfactionEvent}
    accepted = {}
    for contract, batch in out.items():
        topic = next(t for t, c in CONTRACT_OF.items() if c == contract)
        edge = [
            Accepted(RawRecord(topic, 5, 900_000 + i, 0, b"k", json.dumps(d).encode()), model[contract].model_validate(d))
            for i, d in enumerate(extra[contract])
        ]  # fmt: skip
        accepted[contract] = batch.accepted + edge
    return accepted


def _utc(moment: datetime | None) -> datetime | None:
    """What ClickHouse returns for a DateTime64(3, 'UTC'): naive UTC, millisecond precision."""
    if moment is None:
        return None
    moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _naive(moment: datetime | None) -> datetime | None:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment and moment.tzinfo else moment


def _expected_ticket(a: Accepted, ingested_at: datetime) -> dict:
    e, r = a.event, a.record
    return {
        "event_id": e.event_id, "event_time": _utc(e.event_time), "source_system": e.source_system,
        "customer_id": e.customer_id, "ticket_id": e.ticket_id, "step": str(e.step),
        "province": e.region.province if e.region else "", "city": e.region.city if e.region else "",
        "district": e.region.district if e.region else "", "channel": e.channel or "",
        "business_line": e.business_line or "", "complaint_category": e.complaint_category or "",
        "complaint_phenomenon": e.complaint_phenomenon or "", "customer_tier": e.customer_tier or "",
        "department": e.department or "", "problem_location": e.problem_location or "",
        "closure_type": e.closure_type or "", "sla_deadline": _utc(e.sla_deadline), "note": e.note or "",
        "schema_version": 1, "kafka_partition": r.partition, "kafka_offset": r.offset,
        "kafka_timestamp": _utc(datetime.fromtimestamp(r.timestamp_ms / 1000, timezone.utc)),
        "ingested_at": _utc(ingested_at),
    }  # fmt: skip


def _expected_satisfaction(a: Accepted, ingested_at: datetime) -> dict:
    e, r = a.event, a.record
    dims = e.dimensions
    return {
        "event_id": e.event_id, "event_time": _utc(e.event_time), "source_system": e.source_system,
        "customer_id": e.customer_id, "contact_id": e.contact_id, "ticket_id": e.ticket_id or "",
        "channel": e.channel, "province": e.region.province, "city": e.region.city, "district": e.region.district,
        "business_line": e.business_line or "", "customer_tier": e.customer_tier or "", "plan": e.plan or "",
        "overall_score": e.overall_score, **{f"dim_{d}": getattr(dims, d) if dims else None for d in DIMS},
        "nps": e.nps, "problem_solved": e.problem_solved, "schema_version": 1, "kafka_partition": r.partition,
        "kafka_offset": r.offset, "ingested_at": _utc(ingested_at),
        "kafka_timestamp": _utc(datetime.fromtimestamp(r.timestamp_ms / 1000, timezone.utc)),
    }  # fmt: skip


EXPECTED = {"ticket_event": _expected_ticket, "satisfaction_event": _expected_satisfaction}


def _rows(client, sql: str) -> dict[str, dict]:
    rows = {}
    for row in client.query(sql).named_results():
        row = {k: _naive(v) if isinstance(v, datetime) else v for k, v in row.items()}
        rows[row["event_id"]] = row
    return rows


def _counts(client, db: str, table: str) -> tuple[int, int, int]:
    final = client.query(f"SELECT count() FROM {db}.{table} FINAL").result_rows[0][0]
    raw, uniq = client.query(f"SELECT count(), uniqExact(event_id) FROM {db}.{table}").result_rows[0]
    return final, uniq, raw


# -- pure: column builders -----------------------------------------------------------------
def test_arrow_columns_match_the_clickhouse_tables(client, db):
    for contract, (_, inbox, _) in TABLES.items():
        described = [row[0] for row in client.query(f"DESCRIBE TABLE {db}.{inbox}").result_rows]
        columns = TICKET_INBOX_COLUMNS if contract == "ticket_event" else SATISFACTION_INBOX_COLUMNS
        assert list(columns) == described, inbox
    described = [row[0] for row in client.query(f"DESCRIBE TABLE {db}.dead_letters").result_rows]
    assert dead_letter_table([], datetime.now(timezone.utc)).column_names == described


def test_builders_produce_typed_tables(batches):
    now = datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=timezone.utc)
    for builder, contract, columns in (
        (ticket_table, "ticket_event", TICKET_INBOX_COLUMNS),
        (satisfaction_table, "satisfaction_event", SATISFACTION_INBOX_COLUMNS),
    ):
        table = builder(batches[contract], now)
        assert table.num_rows == len(batches[contract])
        assert table.schema == pa.schema(list(columns.items()))
        assert builder([], now).num_rows == 0


# -- migrations ----------------------------------------------------------------------------
def test_migrate_creates_tables_and_is_idempotent(client):
    versions = [v for v, _, _ in migrations()]
    assert versions and versions == sorted(set(versions))
    try:
        assert migrate(client, "cxmig", RAW_TTL, DEAD_TTL) == versions
        tables = {row[0] for row in client.query("SHOW TABLES FROM cxmig").result_rows}
        assert {"ticket_events", "satisfaction_events", "dead_letters", "schema_migrations"} <= tables
        assert migrate(client, "cxmig", RAW_TTL, DEAD_TTL) == []
        recorded = client.query("SELECT version, name FROM cxmig.schema_migrations FINAL ORDER BY version")
        assert recorded.result_rows == [(v, n) for v, n, _ in migrations()]
        ddl = client.query("SHOW CREATE TABLE cxmig.ticket_events").result_rows[0][0]
        assert "ReplacingMergeTree" in ddl and "toIntervalDay(3650)" in ddl
        ddl = client.query("SHOW CREATE TABLE cxmig.dead_letters").result_rows[0][0]
        assert "toIntervalDay(30)" in ddl
    finally:
        client.command("DROP DATABASE IF EXISTS cxmig")


# -- round trip ----------------------------------------------------------------------------
@pytest.mark.parametrize("contract", sorted(TABLES))
def test_every_field_round_trips(client, db, batches, contract):
    table, inbox, build = TABLES[contract]
    accepted = batches[contract]
    now = datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=timezone.utc)
    Writer(client, db).insert(inbox, build(accepted, now))  # ClickHouse parses the JSON into the table
    stored = _rows(client, f"SELECT * FROM {db}.{table}")
    assert len(stored) == len(accepted)
    for a in accepted:
        expected = EXPECTED[contract](a, now)
        got = stored[a.event.event_id]
        assert got == expected, {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    # the cases that matter are really in the data
    rows = list(stored.values())
    if contract == "ticket_event":
        assert any(r["sla_deadline"] is None for r in rows) and any(r["sla_deadline"] for r in rows)
        assert any(r["district"] == "" for r in rows) and any(r["district"] for r in rows)
        edge = stored["edge-t1"]
        assert edge["event_time"] == datetime(2026, 11, 20, 1, 15, 0, 123000)
        assert edge["sla_deadline"] == datetime(2026, 11, 21, 1, 15, 0, 999000)
        assert edge["note"] == "customer asked twice, 二次投诉\n\"again\" \\ \u00e9"  # JSON escapes, parsed by ClickHouse
        assert stored["edge-t2"]["event_time"] == datetime(2026, 11, 20, 16, 40, 0, 1000)
    else:
        assert {r["problem_solved"] for r in rows} >= {True, False, None}
        assert any(r["dim_ivr_menu"] is None for r in rows) and any(r["dim_ivr_menu"] for r in rows)
        s1, s2 = stored["edge-s1"], stored["edge-s2"]
        assert (s1["nps"], s1["problem_solved"], s1["dim_ivr_menu"], s1["dim_call_outcome"]) == (0, False, 1, 10)
        assert s1["dim_reach_speed"] is None
        assert (s2["nps"], s2["problem_solved"], s2["dim_overall_service"], s2["plan"]) == (None, None, None, "")
        assert s2["event_time"] == datetime(2026, 11, 20, 20, 5, 0, 500000)


# -- idempotency ---------------------------------------------------------------------------
@pytest.mark.parametrize("contract", sorted(TABLES))
def test_a_retried_block_is_stored_once(client, db, batches, contract):
    table, inbox, build = TABLES[contract]
    data = build(batches[contract], datetime.now(timezone.utc))
    writer = Writer(client, db)
    writer.insert(inbox, data)
    writer.insert(inbox, data)  # the same block again: a retry after a lost ack
    unique = len({a.event.event_id for a in batches[contract]})
    assert _counts(client, db, table) == (unique, unique, unique)


@pytest.mark.parametrize("contract", sorted(TABLES))
def test_a_redelivered_event_in_another_block_counts_once(client, db, batches, contract):
    table, inbox, build = TABLES[contract]
    accepted = batches[contract]
    writer = Writer(client, db)
    writer.insert(inbox, build(accepted, datetime.now(timezone.utc)))
    # after a crash before the commit: some events come again at new offsets, mixed with nothing new
    again = [replace(a, record=replace(a.record, offset=a.record.offset + 10_000)) for a in accepted[::7]]
    writer.insert(inbox, build(again, datetime.now(timezone.utc) + timedelta(seconds=1)))
    unique = len({a.event.event_id for a in accepted})
    final, uniq, raw = _counts(client, db, table)
    assert (final, uniq) == (unique, unique)
    assert raw == unique + len(again)  # the second block really was stored: FINAL did the work
    client.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
    assert _counts(client, db, table) == (unique, unique, unique)


def test_dead_letters_keep_original_bytes_and_a_redelivery_counts_once(client, db):
    sim = generate(1500, seed=8, start=START)
    # Kafka timestamps must be recent: dead letters older than their TTL (90 d) may be dropped on insert.
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    records = [
        RawRecord(TOPICS[r.stream], 1, i, now_ms + i, r.key, r.value) for i, r in enumerate(sim.records)
    ]
    records.append(RawRecord(TOPICS["ticket_events"], 2, 77, now_ms, None, b"\xff\x00not utf-8"))
    out = BatchSplitter(CONTRACT_OF, lambda: SeenIds(3600, 10**6)).split(records)
    rejected = [r for b in out.values() for r in b.rejected]
    assert len(rejected) > 5
    writer = Writer(client, db)
    writer.insert("dead_letters", dead_letter_table(rejected, datetime.now(timezone.utc)))
    writer.insert("dead_letters", dead_letter_table(rejected, datetime.now(timezone.utc) + timedelta(seconds=1)))
    stored = client.query(
        f"SELECT source_topic, kafka_partition, kafka_offset, hex(payload), hex(kafka_key), reason, field, "
        f"source_system, event_id FROM {db}.dead_letters FINAL"
    ).result_rows
    expected = [
        (r.record.topic, r.record.partition, r.record.offset, r.record.value.hex().upper(),
         (r.record.key or b"").hex().upper(), r.reason, r.field, r.source_system, r.event_id)
        for r in rejected
    ]  # fmt: skip
    assert sorted(stored) == sorted(expected)


# -- warming the dedup set -------------------------------------------------------------------
def test_recent_event_ids_returns_stored_ids_within_the_horizon(client, db, batches):
    table, inbox, build = TABLES["satisfaction_event"]
    accepted = batches["satisfaction_event"]
    old, recent, newest = accepted[:50], accepted[50:150], accepted[150:200]
    now = datetime.now(timezone.utc)
    writer = Writer(client, db)
    writer.insert(inbox, build(old, now - timedelta(days=3)))
    writer.insert(inbox, build(recent, now - timedelta(minutes=10)))
    writer.insert(inbox, build(newest, now))
    ids = writer.recent_event_ids(table, timedelta(days=1), 10_000)
    assert sorted(ids) == sorted(a.event.event_id for a in recent + newest)
    assert set(ids[: len(newest)]) == {a.event.event_id for a in newest}  # newest first
    limited = writer.recent_event_ids(table, timedelta(days=1), 30)
    assert len(limited) == 30 and set(limited) <= {a.event.event_id for a in newest}
    assert writer.recent_event_ids("ticket_events", timedelta(days=1), 10) == []


# -- Writer retries, against real engine failures ----------------------------------------
def _one_row_table() -> pa.Table:
    return pa.table({"x": pa.array([1], pa.int64())})


def test_writer_retries_then_succeeds(client, db):
    """The table is missing (a real UNKNOWN_TABLE error) until the second retry creates it."""
    retried = []

    def on_retry(table, exc):
        retried.append(table)
        if len(retried) == 2:
            client.command(f"CREATE TABLE {db}.late (x Int64) ENGINE = MergeTree ORDER BY x")

    writer = Writer(client, db, retries=3, backoff=timedelta(0), on_retry=on_retry)
    writer.insert("late", _one_row_table())
    assert retried == ["late", "late"]
    assert client.query(f"SELECT x FROM {db}.late").result_rows == [(1,)]


def test_writer_gives_up_after_its_retries(client, db):
    retried = []
    writer = Writer(client, db, retries=2, backoff=timedelta(0), on_retry=lambda t, e: retried.append(t))
    with pytest.raises(Exception, match="(?i)unknown table|doesn't exist|does not exist"):
        writer.insert("never_created", _one_row_table())
    assert retried == ["never_created", "never_created"]


def test_writer_skips_empty_tables(client, db):
    # An empty insert into a table that does not exist would raise if it were sent.
    Writer(client, db, retries=0).insert("never_created", pa.table({"x": pa.array([], pa.int64())}))
