"""Event contracts: checked-in JSON Schemas match the models, examples validate, per-step rules hold in both."""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

import jsonschema  # test extra: the exported schemas are checked with a real JSON Schema validator
import pytest
from pydantic import ValidationError

from stream.contract import CONTRACTS, SatisfactionEvent, TicketEvent
from stream.contract.export import EXAMPLES, SCHEMA_DIR, drift, rendered
from stream.contract.ticket import REQUIRED_BY_STEP

SCHEMA_FILES = {name: SCHEMA_DIR / f"{name}.v1.schema.json" for name in CONTRACTS}


def _load(contract: str) -> dict[str, Any]:
    return json.loads(SCHEMA_FILES[contract].read_text())


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_rfc3339(value: object) -> bool:
    """RFC 3339 date-time (what JSON Schema's `date-time` means): the offset is mandatory."""
    return not isinstance(value, str) or bool(_RFC3339.match(value))


@functools.cache
def _validator(contract: str) -> jsonschema.protocols.Validator:
    schema = _load(contract)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=_FORMATS)


def _schema_errors(contract: str, doc: dict[str, Any]) -> list[str]:
    return [e.message for e in _validator(contract).iter_errors(doc)]


def _model_error_types(model: type, doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(doc))
    return [e["type"] for e in info.value.errors()]


def _full_ticket(step: str) -> dict[str, Any]:
    """A ticket event carrying every optional field, so any step's requirements are met."""
    doc = copy.deepcopy(EXAMPLES["ticket_event"][0])
    doc.update(step=step, department="NET_OPS", closure_type="resolved", problem_location="access_network")
    return doc


SAT = EXAMPLES["satisfaction_event"][0]
TICKET_CREATED, TICKET_CLOSED = EXAMPLES["ticket_event"]


# -- the checked-in files ----------------------------------------------------------------
def test_checked_in_schemas_match_the_models():
    stale = drift()
    assert stale == [], f"schemas out of date: {', '.join(stale)}; run `cxstream schemas export` and commit schemas/"


def test_rendered_covers_every_contract_and_is_valid_json_schema():
    files = rendered()
    assert sorted(files) == sorted(p.name for p in SCHEMA_FILES.values())
    for name, text in files.items():
        schema = json.loads(text)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith("/" + name)
        jsonschema.Draft202012Validator.check_schema(schema)


def test_drift_detects_a_stale_or_missing_file(tmp_path):
    for name, text in rendered().items():
        (tmp_path / name).write_text(text)
    assert drift(tmp_path) == []
    stale = "ticket_event.v1.schema.json"
    (tmp_path / stale).write_text((tmp_path / stale).read_text().replace("Complaint ticket id", "Ticket id"))
    (tmp_path / "satisfaction_event.v1.schema.json").unlink()
    assert sorted(drift(tmp_path)) == ["satisfaction_event.v1.schema.json", stale]


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_every_example_validates_against_model_and_schema(contract):
    schema = _load(contract)
    examples = schema["examples"]
    assert examples, f"{contract}: the schema carries no examples"
    assert examples == EXAMPLES[contract]
    for example in examples:
        event = CONTRACTS[contract].model_validate_json(json.dumps(example))
        assert event.model_dump(mode="json", exclude_defaults=False)["schema_version"] == example["schema_version"]
        assert _schema_errors(contract, example) == []


def _undocumented(node: Any, path: str) -> list[str]:
    """Paths of properties (at any depth, $defs included) without a non-empty description."""
    out: list[str] = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            desc = prop.get("description") if isinstance(prop, dict) else None
            if not (isinstance(desc, str) and desc.strip()):
                out.append(f"{path}.properties.{name}")
        for key, value in node.items():
            if key not in ("examples", "if", "then", "else", "not"):  # conditions are not declarations
                out.extend(_undocumented(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_undocumented(value, f"{path}[{i}]"))
    return out


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_every_property_is_documented(contract):
    schema = _load(contract)
    assert schema.get("description", "").strip(), f"{contract}: no top-level description"
    assert _undocumented(schema, contract) == []
    # the walk really visits nested definitions
    nested = {"ticket_event": "Region", "satisfaction_event": "HotlineDimensions"}.get(contract)
    if nested:
        assert schema["$defs"][nested]["properties"]


def test_undocumented_walk_finds_nested_gaps():
    schema = {"properties": {"a": {"description": "x"}}, "$defs": {"D": {"properties": {"b": {"description": " "}}}}}
    assert _undocumented(schema, "s") == ["s.$defs.D.properties.b"]


# -- per-step requirements ----------------------------------------------------------------
STEP_FIELD_CASES = [(step, field) for step, fields in REQUIRED_BY_STEP.items() for field in fields]


@pytest.mark.parametrize("step", sorted(REQUIRED_BY_STEP))
def test_a_complete_event_is_accepted_for_every_step(step):
    doc = _full_ticket(step)
    assert TicketEvent.model_validate_json(json.dumps(doc)).step == step
    assert _schema_errors("ticket_event", doc) == []


@pytest.mark.parametrize(("step", "field"), STEP_FIELD_CASES, ids=[f"{s}-{f}" for s, f in STEP_FIELD_CASES])
def test_a_step_without_its_mandatory_field_is_rejected(step, field):
    doc = _full_ticket(step)
    del doc[field]
    with pytest.raises(ValidationError) as info:
        TicketEvent.model_validate_json(json.dumps(doc))
    err = info.value.errors()[0]
    assert err["type"] == "missing_for_step"
    assert field in err["ctx"]["fields"]
    assert any(f"'{field}' is a required property" in m for m in _schema_errors("ticket_event", doc))


def test_closed_without_closure_type_and_created_without_sla_deadline_are_rejected():
    closed = {k: v for k, v in TICKET_CLOSED.items() if k != "closure_type"}
    created = {k: v for k, v in TICKET_CREATED.items() if k != "sla_deadline"}
    assert _model_error_types(TicketEvent, closed) == ["missing_for_step"]
    assert _model_error_types(TicketEvent, created) == ["missing_for_step"]
    assert _schema_errors("ticket_event", closed) == ["'closure_type' is a required property"]
    assert _schema_errors("ticket_event", created) == ["'sla_deadline' is a required property"]


@pytest.mark.parametrize("step", ["reopened", "callback"])
def test_steps_without_requirements_need_only_the_envelope(step):
    doc = {k: TICKET_CLOSED[k] for k in ("schema_version", "event_id", "event_time", "source_system", "customer_id")}
    doc.update(ticket_id="T-1", step=step)
    assert TicketEvent.model_validate_json(json.dumps(doc)).step == step
    assert _schema_errors("ticket_event", doc) == []


def test_a_mandatory_field_sent_as_null_is_rejected_by_model_and_schema():
    """Upstream validating against the published schema must not pass what ingest dead-letters."""
    doc = dict(TICKET_CLOSED, closure_type=None)
    assert _model_error_types(TicketEvent, doc) == ["missing_for_step"]
    assert _schema_errors("ticket_event", doc) != [], "the JSON Schema accepts closure_type: null on 'closed'"


def test_sla_deadline_must_follow_event_time_on_created():
    doc = dict(TICKET_CREATED, sla_deadline=TICKET_CREATED["event_time"])
    assert _model_error_types(TicketEvent, doc) == ["value_error"]


# -- envelope rules -----------------------------------------------------------------------
MODELS = [("ticket_event", TicketEvent, TICKET_CREATED), ("satisfaction_event", SatisfactionEvent, SAT)]
MODEL_IDS = [m[0] for m in MODELS]


NAIVE_CASES = [
    ("ticket_event", TicketEvent, TICKET_CREATED, "event_time"),
    ("ticket_event", TicketEvent, TICKET_CREATED, "sla_deadline"),
    ("satisfaction_event", SatisfactionEvent, SAT, "event_time"),
]


@pytest.mark.parametrize(
    ("contract", "model", "example", "field"), NAIVE_CASES, ids=[f"{c[0]}-{c[3]}" for c in NAIVE_CASES]
)
def test_naive_datetimes_are_rejected(contract, model, example, field):
    doc = dict(example, **{field: example[field][:19]})  # offset dropped: local time of unknown zone
    assert _model_error_types(model, doc) == ["timezone_aware"]
    assert _load(contract)["properties"][field].get("format") == "date-time" or any(
        alt.get("format") == "date-time" for alt in _load(contract)["properties"][field].get("anyOf", [])
    )
    assert _schema_errors(contract, doc) != []


@pytest.mark.parametrize(("contract", "model", "example"), MODELS, ids=MODEL_IDS)
def test_utc_and_offset_datetimes_are_accepted(contract, model, example):
    for moment in ("2026-11-20T01:15:00Z", "2026-11-20T09:15:00.250+08:00"):
        doc = dict(example, event_time=moment)
        event = model.model_validate_json(json.dumps(doc))
        assert event.event_time.utcoffset() is not None
        assert _schema_errors(contract, doc) == []


@pytest.mark.parametrize(("contract", "model", "example"), MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("version", [0, 2])
def test_other_schema_versions_are_rejected(contract, model, example, version):
    doc = dict(example, schema_version=version)
    assert _model_error_types(model, doc) == ["greater_than_equal" if version < 1 else "less_than_equal"]
    assert _schema_errors(contract, doc) != []


@pytest.mark.parametrize(("contract", "model", "example"), MODELS, ids=MODEL_IDS)
def test_extra_fields_are_rejected(contract, model, example):
    top = dict(example, priority="high")
    nested = dict(example, region=dict(example["region"], street="Main St 1"))
    for doc in (top, nested):
        assert _model_error_types(model, doc) == ["extra_forbidden"]
    assert any("Additional properties are not allowed ('priority'" in m for m in _schema_errors(contract, top))
    assert _schema_errors(contract, nested) != []


def test_extra_hotline_dimension_is_rejected():
    doc = dict(SAT, dimensions=dict(SAT["dimensions"], hold_music=3))
    assert _model_error_types(SatisfactionEvent, doc) == ["extra_forbidden"]
    assert _schema_errors("satisfaction_event", doc) != []


@pytest.mark.parametrize(
    ("field", "value"),
    [("overall_score", 0), ("overall_score", 11), ("nps", -1), ("nps", 11), ("dimensions", {"ivr_menu": 0})],
)
def test_scores_out_of_range_are_rejected(field, value):
    doc = dict(SAT, **{field: value})
    assert _model_error_types(SatisfactionEvent, doc)[0] in ("greater_than_equal", "less_than_equal")
    assert _schema_errors("satisfaction_event", doc) != []


@pytest.mark.parametrize(
    ("contract", "model", "doc"),
    [
        ("ticket_event", TicketEvent, dict(TICKET_CREATED, channel="fax")),
        ("ticket_event", TicketEvent, dict(TICKET_CLOSED, closure_type="auto_closed")),
        ("ticket_event", TicketEvent, dict(TICKET_CLOSED, step="escalated")),
        ("satisfaction_event", SatisfactionEvent, dict(SAT, customer_tier="diamond")),
    ],
)
def test_unknown_codes_in_closed_vocabularies_are_rejected(contract, model, doc):
    assert _model_error_types(model, doc)[0] == "enum"
    assert _schema_errors(contract, doc) != []


def test_parsed_examples_keep_their_values():
    sat = SatisfactionEvent.model_validate_json(json.dumps(SAT))
    assert (sat.channel, sat.overall_score, sat.nps, sat.problem_solved) == ("hotline", 7, 8, True)
    assert sat.dimensions.reach_speed == 5 and sat.region.district == "P01-C02-D03"
    created = TicketEvent.model_validate_json(json.dumps(TICKET_CREATED))
    assert created.sla_deadline.isoformat() == "2026-11-21T09:15:00+08:00"
    assert created.closure_type is None and created.department is None
