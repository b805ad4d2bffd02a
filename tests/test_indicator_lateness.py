"""Late and too-late events (docs/indicators.md, "When a window is published" and "Late events").

Unit tests of the pure :class:`stream.indicators.cube.Cube`, then one end-to-end test on the embedded
broker and chDB: a late event corrects its window (the corrected value is stored and published again), a
too-late event is counted, recorded in ``indicator_too_late`` and not applied, and its raw event is stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.contract import SatisfactionEvent
from stream.contract.export import EXAMPLES
from stream.contract.reference import IndicatorUpdate
from stream.indicators.counters import INDEX, sparse
from stream.indicators.cube import Cube, TooLate
from stream.indicators.facts import Cell
from stream.runtime import metrics
from stream.topology import IndicatorSettings, WindowSpec

from .conftest import start_agent, stop_agent

DAY = datetime(2026, 11, 20, tzinfo=timezone.utc)
CELL = Cell("P01", "P01-C02", "P01-C02-D03", "hotline", "broadband")
SAT = ("cx.satisfaction-events.v1", 0)
SAT_N = INDEX["sat_n"]

TUMBLING = [
    WindowSpec(name="5m", kind="tumbling", size="5m"),
    WindowSpec(name="1h", kind="tumbling", size="1h"),
    WindowSpec(name="1d", kind="tumbling", size="1d"),
]
HOURLY_24H = [
    WindowSpec(name="1h", kind="tumbling", size="1h"),
    WindowSpec(name="24h", kind="rolling", size="24h", step="1h"),
]


def at(h: int, m: int = 0, s: int = 0) -> datetime:
    return DAY + timedelta(hours=h, minutes=m, seconds=s)


def fact(t: datetime, score: int = 7):
    return (int(t.timestamp()), CELL, sparse(sat_n=1, sat_sum=score, sat_sumsq=score * score))


def sat_n(out, window: str) -> dict[datetime, float]:
    """Published cells of one window: start -> sat_n."""
    return {k.start: v[SAT_N] for k, v in out if k.window == window}


def event(cube: Cube, t: datetime, source: str = "e", score: int = 7, partition=SAT) -> list[TooLate]:
    """One satisfaction event as the stage handles it: add its fact, then move the watermark."""
    late = cube.add([fact(t, score)], source, kind="satisfaction")
    cube.advance(t, partition)
    return late


# -- tumbling windows: late, too late ---------------------------------------------------------------


def test_late_fact_within_lateness_corrects_its_window_and_is_published_again():
    cube = Cube(TUMBLING, lateness=timedelta(minutes=30))
    assert event(cube, at(10, 5), score=6) == [] and event(cube, at(10, 20), score=8) == []
    assert sat_n(cube.flush(), "1h") == {at(10): 2}
    assert event(cube, at(11, 10)) == []
    out = cube.flush()
    assert sat_n(out, "1h") == {at(11): 1}  # 10:00 did not change: not published again

    # Watermark 11:10: the 10:00 hour is correctable until 11:00 + 30m.
    assert cube.watermark == at(11, 10)
    assert event(cube, at(10, 40), source="late", score=10) == []
    assert cube.watermark == at(11, 10)  # an older event does not move it back
    out = cube.flush()
    assert sat_n(out, "1h") == {at(10): 3}  # the corrected value, and only the window it touched
    assert sat_n(out, "5m") == {at(10, 40): 1}
    assert sat_n(out, "1d") == {DAY: 4}
    corrected = next(v for k, v in out if k.window == "1h")
    assert corrected[INDEX["sat_sum"]] == 6 + 8 + 10
    assert corrected[INDEX["sat_sumsq"]] == 36 + 64 + 100


def test_window_is_final_exactly_when_its_end_plus_lateness_is_not_after_the_watermark():
    cube = Cube(TUMBLING, lateness=timedelta(minutes=30))
    event(cube, at(11, 29, 59))
    assert event(cube, at(10, 59, 59), source="just-in-time") == []  # 11:00 + 30m > 11:29:59
    assert sat_n(cube.flush(), "1h") == {at(10): 1, at(11): 1}

    event(cube, at(11, 30))
    late = event(cube, at(10, 59, 59), source="just-too-late")
    assert {(x.window, x.start) for x in late} == {("5m", at(10, 55)), ("1h", at(10))}  # 11:00 + 30m == 11:30
    assert sat_n(cube.flush(), "1h") == {at(11): 2}  # only the 11:30 event; the 10:00 hour stays at 1


def test_too_late_fact_is_reported_for_the_final_windows_only_and_not_applied_to_them():
    cube = Cube(TUMBLING, lateness=timedelta(minutes=30))
    for i, t in enumerate([at(10, 5), at(10, 20), at(11, 10), at(10, 40), at(11, 50)]):
        assert event(cube, t, source=f"e{i}") == []
    before = cube.flush()
    assert sat_n(before, "1h") == {at(10): 3, at(11): 2}

    # Watermark 11:50 > 11:00 + 30m: the 10:00 hour (and its 5-minute windows) are final; the day is not.
    late = event(cube, at(10, 50), source="too-late")
    assert sorted(late) == sorted([
        TooLate("satisfaction", "too-late", at(10, 50), "5m", at(10, 50), CELL.district),
        TooLate("satisfaction", "too-late", at(10, 50), "1h", at(10), CELL.district),
    ])  # fmt: skip
    out = cube.flush()
    assert sat_n(out, "1d") == {DAY: 6}  # still open: the fact is applied there
    assert sat_n(out, "1h") == {} and sat_n(out, "5m") == {}  # final: not applied, not published

    # A retraction aimed at a final window is dropped too, but it is not "too late" (nothing new arrived).
    assert cube.add([fact(at(10, 5))], "gone", sign=-1.0) == []


def test_watermark_is_the_oldest_of_the_partitions_newest_event_times():
    cube = Cube(TUMBLING, lateness=timedelta(minutes=30))
    cube.advance(at(11, 50), ("cx.satisfaction-events.v1", 0))
    cube.advance(at(10, 15), ("cx.satisfaction-events.v1", 1))
    assert cube.watermark == at(10, 15)  # the lagging partition holds the watermark back ...
    cube.advance(at(10, 0), ("cx.satisfaction-events.v1", 1))
    assert cube.watermark == at(10, 15)  # ... and an older event of it does not move it
    assert cube.add([fact(at(10, 50))], "kept-open", kind="satisfaction") == []  # so the 10:00 hour is still open
    assert sat_n(cube.flush(), "1h") == {at(10): 1}

    cube.advance(at(12, 0), ("cx.satisfaction-events.v1", 1))  # it catches up: partition 0 is now the oldest
    assert cube.watermark == at(11, 50)
    late = cube.add([fact(at(10, 50))], "too-late", kind="satisfaction")
    assert {x.window for x in late} == {"5m", "1h"}

    # Partitions are per topic: another topic's partition 0 lagging holds it back as well.
    cube.advance(at(9, 0), ("cx.ticket-events.v1", 0))
    assert cube.watermark == at(9, 0)
    cube.forget_partitions([0])  # partition 0 (of every topic) moved to another worker
    assert cube.watermark == at(12, 0)
    cube.forget_partitions([1])
    assert cube.watermark is None


def test_stage_judges_a_batch_against_the_watermark_before_it():
    """A batch carrying a partition's backlog (newest first here) does not make its own older events too late."""
    from stream.indicators.stage import IndicatorStage
    from stream.ingest.records import Accepted, IngestBatch, RawRecord

    settings = IndicatorSettings(lateness=timedelta(minutes=30), satisfied_min_score=8, windows=TUMBLING)
    stage = IndicatorStage(settings, writer=None, source_topics={})  # type: ignore[arg-type]
    offset = iter(range(100))

    def batch(*times: datetime) -> dict[str, IngestBatch]:
        accepted = [
            Accepted(RawRecord(SAT[0], SAT[1], next(offset), 0, b"k", b"{}"), satisfaction(f"S-{t:%H%M}", t))
            for t in times
        ]  # fmt: skip
        return {"satisfaction_event": IngestBatch(accepted, [], [])}

    assert stage.apply(batch(at(10, 5), at(11, 10)), [], {}) == []
    assert sat_n(stage.cube.flush(), "1h") == {at(10): 1, at(11): 1}
    # One batch: 12:00 then 10:45. Against the watermark before it (11:10) the 10:00 hour is open until 11:30.
    assert stage.apply(batch(at(12, 0), at(10, 45)), [], {}) == []
    assert sat_n(stage.cube.flush(), "1h") == {at(10): 2, at(12): 1}
    assert stage.cube.watermark == at(12, 0)
    late = stage.apply(batch(at(10, 50)), [], {})  # now it is final (12:00 > 11:30)
    assert {(x.kind, x.source, x.window) for x in late} == {("satisfaction", "S-1050", "5m"), ("satisfaction", "S-1050", "1h")}


# -- rolling windows ---------------------------------------------------------------------------------


def _counts_by_hour(times: list[datetime]) -> dict[datetime, int]:
    out: dict[datetime, int] = {}
    for t in times:
        h = t.replace(minute=0, second=0)
        out[h] = out.get(h, 0) + 1
    return out


def _expected_24h(times: list[datetime], end: datetime) -> float:
    return float(sum(1 for t in times if end - timedelta(hours=24) <= t < end))


def test_rolling_window_is_published_when_current_and_equals_the_sum_of_its_hourly_cells():
    cube = Cube(HOURLY_24H, lateness=timedelta(hours=2))
    times: list[datetime] = []
    published: dict[datetime, float] = {}  # 24h window end -> last published sat_n
    for h in range(30):
        if h % 7 == 3:
            continue  # an hour without events
        hour_times = [at(h, 10 + 7 * i) for i in range(1 + (h * 5) % 4)]
        for t in hour_times:
            event(cube, t, source=f"e{t:%d%H%M}")
        times += hour_times
        if h == 20:  # a late event (within lateness) corrects the hour and the rolling windows containing it
            assert event(cube, at(19, 55), source="late") == []
            times.append(at(19, 55))
        out = cube.flush()
        current_end = at(h + 1)  # the watermark is in hour h: the window ending at h+1 is current
        rolled = {k.end: v[SAT_N] for k, v in out if k.window == "24h"}
        assert current_end in rolled, f"window ending {current_end} became current but was not published"
        assert max(rolled) == current_end, "a window still filling was published"
        for k, v in out:
            if k.window == "24h":
                assert k.end - k.start == timedelta(hours=24)
                assert v[SAT_N] == _expected_24h(times, k.end), k
        if h == 20:
            assert {at(20), at(21)} <= set(rolled), "the correction did not reach the rolling windows"
            assert rolled[at(20)] == published[at(20)] + 1
        published.update(rolled)

    # Every window is the sum of its 24 hourly cells, as published.
    by_hour = _counts_by_hour(times)
    for end, value in published.items():
        assert value == sum(n for hour, n in by_hour.items() if end - timedelta(hours=24) <= hour < end)
    assert published[at(24)] == _expected_24h(times, at(24)) > 0


def test_watermark_jump_publishes_every_rolling_window_it_passed():
    cube = Cube(HOURLY_24H, lateness=timedelta(hours=6))
    times = [at(h, 30) for h in range(6)]
    for t in times:
        event(cube, t)
    assert max(k.end for k, _ in cube.flush() if k.window == "24h") == at(6)

    event(cube, at(10, 10))  # one batch moves the watermark by four steps (a replay, a partition catching up)
    times.append(at(10, 10))
    rolled = {k.end: v[SAT_N] for k, v in cube.flush() if k.window == "24h"}
    assert set(rolled) == {at(7), at(8), at(9), at(10), at(11)}
    for end, value in rolled.items():
        assert value == _expected_24h(times, end)


def test_watermark_jump_beyond_lateness_still_publishes_the_windows_it_passed():
    cube = Cube(HOURLY_24H, lateness=timedelta(hours=2))
    times = [at(h, 30) for h in range(6)]
    for t in times:
        event(cube, t)
    assert max(k.end for k, _ in cube.flush() if k.window == "24h") == at(6)
    event(cube, at(10, 10))  # final before 08:10: the windows ending 07:00 and 08:00 were passed, and are final
    rolled = {k.end for k, _ in cube.flush() if k.window == "24h"}
    assert {at(7), at(8)} <= rolled, f"published only {sorted(t.strftime('%H:%M') for t in rolled)}"


def test_fact_too_late_for_its_hour_is_too_late_for_the_rolling_windows_on_it():
    """A 24h window is the sum of its hours: a fact too late for its hour is reported once, for the hour,
    and changes no rolling window, also not an open one (docs/indicators.md, Late events)."""
    cube = Cube(HOURLY_24H, lateness=timedelta(minutes=30))
    for t in [at(10, 5), at(10, 20), at(11, 50)]:
        event(cube, t)
    before = {k.start: v[SAT_N] for k, v in cube.flush() if k.window == "24h"}
    # Watermark 11:50: the 10:00 hour is final, the 24h window [19th 12:00, 20th 12:00) is current and open.
    late = event(cube, at(10, 50), source="too-late")
    out = cube.flush()
    assert {(x.window, x.start) for x in late} == {("1h", at(10))}
    assert not [k for k, _ in out if k.window == "24h"], "a rolling window changed by a fact too late for its hour"
    assert before[at(12) - timedelta(hours=24)] == 3.0


# -- end to end --------------------------------------------------------------------------------------

DISTRICT = EXAMPLES["satisfaction_event"][0]["region"]["district"]


def satisfaction(event_id: str, t: datetime, score: int = 7) -> SatisfactionEvent:
    base = dict(EXAMPLES["satisfaction_event"][0])
    base.update(event_id=event_id, event_time=t.isoformat(), customer_id="cust-lateness", overall_score=score)
    return SatisfactionEvent.model_validate(base)


def _cells(raw: bytes) -> list[tuple[str, str, int, datetime, dict[str, float]]]:
    """(district, window, version, window start, counters) per cell of one update message, validated by the contract.

    Reads both message shapes: cells as a list of objects, or cells as columns (element i of every list is cell i).
    """
    u = IndicatorUpdate.model_validate_json(raw)
    doc = json.loads(raw)
    cells = doc["cells"]
    if isinstance(cells, list):
        rows = [(c["window"], c["window_start"], c["counters"]) for c in cells]
    else:
        rows = [
            (w, s, {name: values[i] for name, values in cells["counters"].items()})
            for i, (w, s) in enumerate(zip(cells["window"], cells["window_start"]))
        ]  # fmt: skip
    return [(u.district, w, u.version, datetime.fromisoformat(s.replace("Z", "+00:00")), c) for w, s, c in rows]


async def _indicator_cells(bootstrap: str, topic: str) -> list[tuple[str, str, int, datetime, dict[str, float]]]:
    """Every cell on the indicator topic so far (read to the end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()  # metadata
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert parts, f"no partitions of {topic}"
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[tuple[str, str, int, datetime, dict[str, float]]] = []
        deadline = time.monotonic() + 15
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while await behind():
            assert time.monotonic() < deadline, "could not read the indicator topic to its end"
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                for m in msgs:
                    out += _cells(m.value)
        return out
    finally:
        await consumer.stop()


@pytest.mark.integration
async def test_late_event_corrects_its_window_and_too_late_event_is_counted_and_stored(broker, topology, topics, tmp_path):
    ind = topology.indicators.model_copy(update={"lateness": timedelta(minutes=30)})
    topology = topology.model_copy(update={"indicators": ind})
    agent, writer = await start_agent(broker, topology, tmp_path)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    db = writer.database

    async def step(*events: SatisfactionEvent) -> None:
        """Publish, then wait until the agent has handled (stored and committed) them."""
        expected = sum(agent.progress.totals.values()) + len(events)
        for e in events:
            await producer.send_and_wait(topics["satisfaction_events"], e.model_dump_json(exclude_none=True).encode(),
                                         key=e.customer_id.encode())  # fmt: skip
        deadline = time.monotonic() + 20
        while sum(agent.progress.totals.values()) < expected:
            assert time.monotonic() < deadline, f"agent handled {dict(agent.progress.totals)}, expected {expected}"
            await asyncio.sleep(0.02)
        assert agent.progress.totals["ingested"] == expected, dict(agent.progress.totals)

    def sat_n_of(window: str, start: datetime) -> float | None:
        rows = writer.client.query(
            f"SELECT sum(sat_n) FROM {db}.indicator_values WHERE window = %(w)s AND window_start = %(s)s "
            f"AND district = %(d)s HAVING count() > 0",
            parameters={"w": window, "s": start.replace(tzinfo=None), "d": DISTRICT},
        ).result_rows
        return rows[0][0] if rows else None

    try:
        await step(satisfaction("LT-1005", at(10, 5)), satisfaction("LT-1020", at(10, 20)),
                   satisfaction("LT-1110", at(11, 10)))  # fmt: skip
        assert sat_n_of("1h", at(10)) == 2
        # Watermark 11:10: the 10:00 hour is correctable until 11:30.
        await step(satisfaction("LT-LATE-1040", at(10, 40)))
        assert sat_n_of("1h", at(10)) == 3
        assert sat_n_of("5m", at(10, 40)) == 1

        await step(satisfaction("LT-1150", at(11, 50)))  # watermark 11:50: the 10:00 hour is final
        too_late_before = metrics.INDICATOR_TOO_LATE._value.get()
        await step(satisfaction("LT-TOOLATE-1050", at(10, 50)))
        too_late_delta = metrics.INDICATOR_TOO_LATE._value.get() - too_late_before

        assert sat_n_of("1h", at(10)) == 3  # final value unchanged
        assert sat_n_of("5m", at(10, 50)) is None
        assert sat_n_of("1d", DAY) == 6  # the day is still open: it includes the too-late event
        recorded = writer.client.query(
            f"SELECT DISTINCT window, window_start, source, fact_time, district, watermark "
            f"FROM {db}.indicator_too_late FINAL WHERE event_id = 'LT-TOOLATE-1050'"
        ).result_rows
        windows = {(w, s.replace(tzinfo=timezone.utc) if s.tzinfo is None else s) for w, s, *_ in recorded}
        assert ("1h", at(10)) in windows and ("5m", at(10, 50)) in windows, windows
        assert not {w for w, _ in windows} & {"1d"}, windows  # only the final windows
        # 5m and 1h are final; the 24h windows follow their hour (recorded once, as the hour: docs/indicators.md).
        assert windows == {("5m", at(10, 50)), ("1h", at(10))}
        for _, _, source, fact_time, district, watermark in recorded:
            assert source == "satisfaction" and district == DISTRICT
            assert fact_time.replace(tzinfo=timezone.utc) == at(10, 50)
            assert watermark.replace(tzinfo=timezone.utc) == at(11, 50)
        assert too_late_delta == len(recorded) >= 2
        assert writer.client.query(
            f"SELECT count() FROM {db}.indicator_too_late FINAL WHERE event_id = 'LT-LATE-1040'"
        ).result_rows[0][0] == 0  # the merely late one was applied, not recorded
        stored = writer.client.query(
            f"SELECT event_id, event_time FROM {db}.satisfaction_events WHERE event_id = 'LT-TOOLATE-1050'"
        ).result_rows
        assert [(i, t.replace(tzinfo=timezone.utc)) for i, t in stored] == [("LT-TOOLATE-1050", at(10, 50))]
    finally:
        await producer.stop()
        await stop_agent(agent, writer)

    # The topic carried the 10:00 hour again with its corrected value, and never a value with the too-late event.
    cells = await _indicator_cells(broker.bootstrap, topology.topics["indicator_updates"].name)

    def published(window: str, start: datetime) -> list[float]:
        mine = [(v, c) for d, w, v, s, c in cells if d == DISTRICT and w == window and s == start]
        return [c.get("sat_n", 0) for _, c in sorted(mine, key=lambda vc: vc[0])]  # in version order

    hour = published("1h", at(10))
    assert len(hour) >= 2 and hour[-2:] == [2, 3] and hour == sorted(set(hour)), hour
    day = published("1d", DAY)
    assert day[-1] == 6 and day == sorted(set(day)), day


def test_update_messages_carry_fractional_counters():
    """A handling time in fractional seconds is a non-integral counter column: the message still encodes it
    (a strided numpy column once made orjson refuse the whole batch, and the worker retried it forever)."""
    import orjson

    from stream.indicators.stage import update_messages

    cube = Cube(TUMBLING, lateness=timedelta(minutes=30))
    cube.add([(int(at(10, 1).timestamp()), CELL, sparse(handling_n=1, handling_sum=5400.25))], "t1", kind="ticket")
    cube.add([(int(at(10, 2).timestamp()), CELL, sparse(sat_n=1, sat_sum=7, sat_sumsq=49))], "s1", kind="satisfaction")
    cube.advance(at(10, 2), SAT)
    [(key, value)] = update_messages(cube, cube.flush_columns(), writer=1, version=1)
    doc = orjson.loads(value)
    assert key == CELL.district.encode()
    assert sorted(doc["cells"]["counters"]["handling_sum"]) == [5400.25] * 3  # 5m, 1h and 1d windows
