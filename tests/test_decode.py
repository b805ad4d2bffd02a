"""Decoding raw records: every record comes out exactly once, accepted or rejected with a stable reason."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stream.contract import SatisfactionEvent, TicketEvent
from stream.contract.export import EXAMPLES
from stream.ingest.decode import classify, decode_batch
from stream.ingest.records import RawRecord
from stream.simulate import generate
from stream.simulate.defects import DEFECTS

from .conftest import DEFECT_REASON

START = datetime(2026, 11, 20, tzinfo=timezone(timedelta(hours=8)))
MODELS = {"ticket_events": TicketEvent, "satisfaction_events": SatisfactionEvent}
MODEL_LIST = [TicketEvent, SatisfactionEvent]

#: every reason code decode may give (stream.ingest.records.Rejection)
REASONS = {
    "not_json", "not_object", "missing_field", "unknown_field", "unknown_code", "out_of_range", "bad_time",
    "unsupported_version", "invalid_value", "empty_message",
}  # fmt: skip

SAT = EXAMPLES["satisfaction_event"][0]
TICKET_CREATED, TICKET_CLOSED = EXAMPLES["ticket_event"]


def _rec(value: bytes | None, offset: int = 0, topic: str = "t", partition: int = 3) -> RawRecord:
    return RawRecord(topic, partition, offset, 1_763_600_000_000 + offset, b"cust-1", value)


def _one(value: bytes | None, model=SatisfactionEvent):
    accepted, rejected = decode_batch([_rec(value, 42)], model)
    assert len(accepted) + len(rejected) == 1
    return accepted, rejected


@pytest.fixture(scope="module")
def sim():
    s = generate(6000, seed=11, start=START)
    assert {r.defect for r in s.records if r.kind == "malformed"} == set(DEFECTS)
    return s


def test_expected_reasons_cover_every_simulator_defect():
    assert set(DEFECT_REASON) == set(DEFECTS)


@pytest.mark.parametrize("stream", sorted(MODELS))
def test_each_simulator_defect_maps_to_its_reason(sim, stream):
    sims = [r for r in sim.records if r.stream == stream]
    recs = [_rec(r.value, i, topic=stream) for i, r in enumerate(sims)]
    accepted, rejected = decode_batch(recs, MODELS[stream])
    by_offset = {r.record.offset: r for r in rejected}
    accepted_offsets = {a.record.offset for a in accepted}
    seen = Counter()
    for i, s in enumerate(sims):
        if s.kind in ("valid", "resend"):  # decode does not deduplicate
            assert i in accepted_offsets, f"valid record {i} rejected: {by_offset.get(i)}"
            continue
        rej = by_offset[i]
        assert rej.reason == DEFECT_REASON[s.defect], (s.defect, rej.reason, rej.field, rej.detail)
        seen[s.defect] += 1
    assert len(accepted) + len(rejected) == len(sims)
    assert len(seen) >= 4, seen  # most defects do occur on this stream


def test_defect_rejections_name_the_field_and_keep_source_attribution(sim):
    checked = Counter()
    for stream in MODELS:
        sims = [r for r in sim.records if r.stream == stream]
        _, rejected = decode_batch([_rec(r.value, i, topic=stream) for i, r in enumerate(sims)], MODELS[stream])
        for rej in rejected:
            s = sims[rej.record.offset]
            assert rej.record.value == s.value  # original bytes kept
            if s.defect == "not_json":
                assert (rej.source_system, rej.event_id) == ("", "")
                continue
            doc = json.loads(s.value)
            assert (rej.source_system, rej.event_id) == (doc["source_system"], doc["event_id"])
            if s.defect == "missing_field":
                assert rej.field and rej.field not in doc, (rej.field, sorted(doc))
            elif s.defect == "wrong_version":
                assert rej.field == "schema_version"
            elif s.defect == "bad_time":
                assert rej.field == "event_time"
            elif s.defect == "unknown_code":
                assert rej.field in ("channel", "closure_type", "step")
                assert doc[rej.field] in ("fax", "auto_closed", "escalated")
            elif s.defect == "out_of_range":
                assert rej.field in ("overall_score", "nps") and doc[rej.field] > 10
            assert rej.detail
            checked[s.defect] += 1
    assert set(checked) == set(DEFECTS) - {"not_json"}


@pytest.mark.parametrize("value", [b"", None])
@pytest.mark.parametrize("model", MODEL_LIST)
def test_empty_value_is_an_empty_message(value, model):
    accepted, rejected = _one(value, model)
    assert accepted == []
    (rej,) = rejected
    assert rej.reason == "empty_message" and rej.field == ""
    assert rej.record == _rec(value, 42)
    assert (rej.source_system, rej.event_id) == ("", "")


@pytest.mark.parametrize(
    ("value", "reason", "field"),
    [
        (b"{oops", "not_json", ""),
        (b"\xff\xfe\x00garbage", "not_json", ""),
        (b"[1, 2]", "not_object", ""),
        (b'"text"', "not_object", ""),
        (b"7", "not_object", ""),
        (json.dumps(dict(SAT, extra_field=1)).encode(), "unknown_field", "extra_field"),
        (
            json.dumps(dict(SAT, region={"province": "P01", "city": "P01-C02"})).encode(),
            "missing_field",
            "region.district",
        ),
        (json.dumps(dict(SAT, channel="fax")).encode(), "unknown_code", "channel"),
        (json.dumps(dict(SAT, nps=11)).encode(), "out_of_range", "nps"),
        (json.dumps(dict(SAT, dimensions={"ivr_menu": 0})).encode(), "out_of_range", "dimensions.ivr_menu"),
        (json.dumps(dict(SAT, event_time="2026-11-20T17:05:00")).encode(), "bad_time", "event_time"),
        (json.dumps(dict(SAT, event_time="yesterday")).encode(), "bad_time", "event_time"),
        (json.dumps(dict(SAT, schema_version=2)).encode(), "unsupported_version", "schema_version"),
        (json.dumps(dict(SAT, schema_version=0)).encode(), "unsupported_version", "schema_version"),
        (json.dumps(dict(SAT, plan="has space")).encode(), "invalid_value", "plan"),
    ],
)
def test_reason_codes(value, reason, field):
    accepted, (rej,) = _one(value)
    assert (rej.reason, rej.field) == (reason, field), rej.detail
    assert rej.record.value == value and rej.record.offset == 42


def test_missing_for_step_names_every_missing_field():
    doc = {k: v for k, v in TICKET_CREATED.items() if k not in ("channel", "sla_deadline")}
    _, (rej,) = _one(json.dumps(doc).encode(), TicketEvent)
    assert rej.reason == "missing_field"
    assert rej.field == "channel, sla_deadline"
    assert (rej.source_system, rej.event_id) == ("CRM", TICKET_CREATED["event_id"])


def test_sla_deadline_before_event_time_is_an_invalid_value():
    doc = dict(TICKET_CREATED, sla_deadline="2026-11-20T08:00:00+08:00")
    _, (rej,) = _one(json.dumps(doc).encode(), TicketEvent)
    assert rej.reason == "invalid_value"
    assert "sla_deadline must be after event_time" in rej.detail


def test_classify_reports_every_error_in_detail():
    doc = dict(SAT, channel="fax", nps=99)
    with pytest.raises(ValidationError) as info:
        SatisfactionEvent.model_validate_json(json.dumps(doc))
    reason, field, detail = classify(info.value)
    assert (reason, field) == ("unknown_code", "channel")
    assert "channel:" in detail and "nps:" in detail


def test_best_effort_ids_ignore_non_string_values():
    doc = dict(SAT, source_system=17, event_id=["x"], channel="fax")
    _, (rej,) = _one(json.dumps(doc).encode())
    assert (rej.source_system, rej.event_id) == ("", "")


@pytest.mark.parametrize("value", [b"[" * 100_000, b'{"a":' * 100_000])
def test_deeply_nested_garbage_is_rejected_not_raised(value):
    accepted, (rej,) = _one(value)
    assert rej.reason == "not_json" and (rej.source_system, rej.event_id) == ("", "")


def test_accepted_events_keep_their_record():
    values = [json.dumps(SAT).encode(), json.dumps(dict(SAT, event_id="other")).encode()]
    recs = [_rec(v, i) for i, v in enumerate(values)]
    accepted, rejected = decode_batch(recs, SatisfactionEvent)
    assert rejected == []
    assert [a.record for a in accepted] == recs
    assert [a.event.event_id for a in accepted] == [SAT["event_id"], "other"]
    assert all(isinstance(a.event, SatisfactionEvent) for a in accepted)


# -- properties: nothing raises, nothing is lost, nothing is duplicated ---------------------
def _check_partition(records: list[RawRecord], model) -> None:
    accepted, rejected = decode_batch(records, model)
    assert len(accepted) + len(rejected) == len(records)
    out = sorted([a.record.offset for a in accepted] + [r.record.offset for r in rejected])
    assert out == [r.offset for r in records]  # each exactly once
    by_offset = {r.offset: r for r in records}
    for a in accepted:
        assert a.record is by_offset[a.record.offset]
        assert isinstance(a.event, model)
    for r in rejected:
        assert r.record is by_offset[r.record.offset]  # original bytes, topic, partition, offset, key
        assert r.reason in REASONS
        assert isinstance(r.source_system, str) and isinstance(r.event_id, str) and isinstance(r.detail, str)
        if r.reason != "empty_message":
            assert r.detail


def _records(values: list[bytes | None]) -> list[RawRecord]:
    return [RawRecord("cx.topic", i % 4, 1000 + i, i, None if i % 3 else b"k", v) for i, v in enumerate(values)]


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.binary(max_size=200)), max_size=20), model=st.sampled_from(MODEL_LIST))
def test_arbitrary_bytes_never_raise_and_come_out_once(values, model):
    _check_partition(_records(values), model)


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
ENVELOPE_KEYS = st.sampled_from(
    ["schema_version", "event_id", "event_time", "source_system", "customer_id", "ticket_id", "step", "region",
     "channel", "overall_score", "nps", "dimensions", "sla_deadline", "closure_type", "contact_id"]
)  # fmt: skip


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=st.lists(st.dictionaries(st.text(max_size=12) | ENVELOPE_KEYS, JSON_VALUES, max_size=6), max_size=5),
    model=st.sampled_from(MODEL_LIST),
)
def test_arbitrary_json_objects_never_raise_and_come_out_once(docs, model):
    _check_partition(_records([json.dumps(d).encode() for d in docs]), model)


EXAMPLE_DOCS = [TICKET_CREATED, TICKET_CLOSED, SAT]


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from(EXAMPLE_DOCS),
    patch=st.dictionaries(ENVELOPE_KEYS, JSON_VALUES, max_size=3),
    drop=st.lists(ENVELOPE_KEYS, max_size=2),
    model=st.sampled_from(MODEL_LIST),
)
def test_mutated_examples_never_raise_and_keep_attribution(base, patch, drop, model):
    doc = {k: v for k, v in {**base, **patch}.items() if k not in drop}
    value = json.dumps(doc).encode()
    records = _records([value])
    _check_partition(records, model)
    _, rejected = decode_batch(records, model)
    for r in rejected:
        want_source = doc.get("source_system") if isinstance(doc.get("source_system"), str) else ""
        want_id = doc.get("event_id") if isinstance(doc.get("event_id"), str) else ""
        assert (r.source_system, r.event_id) == (want_source, want_id)


def test_decoding_is_as_strict_as_the_published_schema():
    """The JSON Schema says integer and date-time string; the decoder must not coerce "7" or epoch seconds."""
    from stream.contract.export import EXAMPLES

    base = EXAMPLES["satisfaction_event"][0]
    cases = {
        "invalid_value": dict(base, overall_score="7"),
        "bad_time": dict(base, event_time=1763600000),
    }
    for reason, doc in cases.items():
        _, rejected = decode_batch([RawRecord("t", 0, 0, 0, b"k", json.dumps(doc).encode())], SatisfactionEvent)
        assert [r.reason for r in rejected] == [reason], doc
    accepted, _ = decode_batch([RawRecord("t", 0, 0, 0, b"k", json.dumps(base).encode())], SatisfactionEvent)
    assert len(accepted) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("sla_deadline", "0001-01-01T00:00:00+08:00"), ("sla_deadline", "9999-12-31T20:00:00-08:00"),
     ("event_time", "1899-12-31T23:59:59+00:00")],
)  # fmt: skip
def test_a_placeholder_time_is_rejected_out_of_range(field, value):
    """Times ClickHouse cannot store (and no step happened at), e.g. a .NET DateTime.MinValue, go to the dead
    letters with the field named; the worker's packed state never meets them."""
    from stream.ingest.decode import classify

    doc = json.loads(json.dumps(EXAMPLES["ticket_event"][0]))
    doc.update({"step": "dispatched", "department": "NOC", field: value})
    with pytest.raises(ValidationError) as err:
        TicketEvent.model_validate_json(json.dumps(doc))
    reason, where, _ = classify(err.value)
    assert (reason, where) == ("out_of_range", field)
