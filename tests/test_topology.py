"""topology.yaml: typed loading, durations, and error messages with file:line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydantic
import pytest

from stream.topology import (
    Duration,
    Topology,
    TopologyError,
    format_duration,
    load_topology,
    parse_duration,
    parse_topology,
)

REPO_TOPOLOGY = Path(__file__).parents[1] / "topology.yaml"

# A valid topology with known line numbers (the repo file's comments may move).
VALID = """\
version: 1
topics:
  ticket_events:
    name: cx.ticket-events.v1
    contract: ticket_event
    partitions: 6
    retention: 7d
    cleanup_policy: delete
    key: customer_id
  satisfaction_events:
    name: cx.satisfaction-events.v1
    contract: satisfaction_event
    partitions: 6
    retention: 7d
    cleanup_policy: delete
    key: customer_id
  dead_letters:
    name: cx.dead-letters.v1
    partitions: 1
    retention: 30d
    cleanup_policy: delete
    key: source_topic
consumer:
  group_id: cxstream-ingest
  batch_max_events: 20000
  batch_max_wait: 200ms
  auto_offset_reset: earliest
  session_timeout: 10s
  rebalance_timeout: 2s
dedup:
  horizon: 7d
  max_ids: 5000000
sink:
  database: cxstream
  raw_ttl: 400d
  dead_letter_ttl: 90d
  insert_retries: 5
  retry_backoff: 200ms
state:
  tickets:
    lateness: 10m
    closed_retention: 3d
    open_max_age: 90d
    max_tickets: 2000000
    sla_check_interval: 5s
quality:
  window: 1h
  horizon: 1d
  refresh_interval: 1m
indicators:
  lateness: 2h
  satisfied_min_score: 8
  windows:
    - {name: 1h, kind: tumbling, size: 1h}
    - {name: 24h, kind: rolling, size: 24h, step: 1h}
model:
  horizon: 30d
  max_customers: 1000
  memory: 20000
  prior: 1
  publish_interval: 1m
  factors:
    complaint_categories: [billing, network]
    ticket: [open_ticket, sla_breach]
    closure_types: {levels: [resolved, unresolved], baseline: resolved}
    channels: {levels: [hotline, app_web], baseline: hotline}
    customer_tiers: {levels: [standard, gold], baseline: standard}
    plans: {levels: [], baseline: null}
alerts:
  state_horizon: 2d
  delivery: {retries: 3, backoff: 500ms, resend_interval: 1m, queue_max: 100}
  rules:
    - {name: sat_drop, indicator: sat_mean, scope: district, window: 1h, comparator: "<", threshold: 7, severity: warning}
"""


def edit(line: int, new: str | None, text: str = VALID) -> str:
    """``text`` with 1-based ``line`` replaced by ``new`` (None deletes it)."""
    lines = text.splitlines()
    assert 1 <= line <= len(lines)
    if new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    return "\n".join(lines) + "\n"


def errors_of(text: str, tmp_path: Path) -> list[str]:
    """Write ``text`` to a file, load it, and return the error lines."""
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    return str(info.value).splitlines()


# --------------------------------------------------------------------------- valid


def test_repo_topology_loads() -> None:
    topo = load_topology(REPO_TOPOLOGY)
    assert set(topo.topics) >= {"ticket_events", "satisfaction_events", "dead_letters"}
    assert set(topo.source_topics()) == {"ticket_events", "satisfaction_events"}


def test_valid_text_loads_typed() -> None:
    topo = parse_topology(VALID)
    ticket = topo.topics["ticket_events"]
    assert ticket.name == "cx.ticket-events.v1"
    assert ticket.retention == timedelta(days=7)
    assert ticket.kafka_config() == {"retention.ms": "604800000", "cleanup.policy": "delete"}
    assert topo.topics["dead_letters"].contract is None
    assert topo.consumer.batch_max_wait == timedelta(milliseconds=200)
    assert topo.consumer.rebalance_timeout == timedelta(seconds=2)
    assert topo.sink.raw_ttl == timedelta(days=400)
    assert topo.dedup.max_ids == 5_000_000


def test_models_are_frozen() -> None:
    topo = parse_topology(VALID)
    with pytest.raises(pydantic.ValidationError):
        topo.sink.insert_retries = 3  # type: ignore[misc]


def test_json_dump_round_trips() -> None:
    topo = parse_topology(VALID)
    dumped = topo.model_dump(mode="json")
    assert dumped["sink"]["raw_ttl"] == "400d"
    assert dumped["consumer"]["batch_max_wait"] == "200ms"
    assert Topology.model_validate(dumped) == topo


def test_default_path_from_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "custom.yaml"
    elsewhere.write_text(edit(38, "  retry_backoff: 1s"))
    monkeypatch.setenv("CXSTREAM_TOPOLOGY", str(elsewhere))
    assert load_topology().sink.retry_backoff == timedelta(seconds=1)

    monkeypatch.delenv("CXSTREAM_TOPOLOGY")
    (tmp_path / "topology.yaml").write_text(edit(38, "  retry_backoff: 2s"))
    monkeypatch.chdir(tmp_path)
    assert load_topology().sink.retry_backoff == timedelta(seconds=2)

    monkeypatch.chdir(tmp_path / "..")  # no topology.yaml here: the packaged one
    assert load_topology() == load_topology(REPO_TOPOLOGY)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("200ms", timedelta(milliseconds=200)),
        ("2s", timedelta(seconds=2)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("7d", timedelta(days=7)),
        ("400d", timedelta(days=400)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(minutes=90)),
        (" 10s ", timedelta(seconds=10)),
        (30, timedelta(seconds=30)),
        (0, timedelta()),
        (timedelta(hours=2), timedelta(hours=2)),
    ],
)
def test_duration_parses(raw: object, expected: timedelta) -> None:
    assert parse_duration(raw) == expected


@pytest.mark.parametrize("raw", ["", "7", "7 d", "7days", "1.5h", "-5m", "m", True, 1.5, -3, None])
def test_duration_rejects(raw: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(raw)


@pytest.mark.parametrize("text", ["200ms", "2s", "5m", "1h", "1d", "400d", "2w", "90m"])
def test_duration_formats_back(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_duration_is_reusable_in_other_models() -> None:
    class Window(pydantic.BaseModel):
        size: Duration

    assert Window(size="5m").size == timedelta(minutes=5)
    assert Window.model_validate_json('{"size": "1h"}').size == timedelta(hours=1)
    with pytest.raises(pydantic.ValidationError, match="invalid duration"):
        Window(size="soon")


# --------------------------------------------------------------------------- errors


def test_out_of_range_message_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    assert errors_of(edit(13, "    partitions: 5000"), tmp_path) == [
        f"{path}:13: topics.satisfaction_events.partitions: "
        "Input should be less than or equal to 1024 (got 5000)"
    ]


@pytest.mark.parametrize(
    ("line", "new", "line_no", "field", "fragment"),
    [
        # wrong types
        (6, "    partitions: six", 6, "topics.ticket_events.partitions", "valid integer"),
        (32, "  max_ids: [1, 2]", 32, "dedup.max_ids", "valid integer"),
        (26, "  batch_max_wait: 2 seconds", 26, "consumer.batch_max_wait", "invalid duration"),
        (1, "version: 2", 1, "version", "Input should be 1 (got 2)"),
        # out of range / not allowed
        (19, "    partitions: 0", 19, "topics.dead_letters.partitions", "greater than or equal to 1"),
        (37, "  insert_retries: -1", 37, "sink.insert_retries", "greater than or equal to 0"),
        (27, "  auto_offset_reset: newest", 27, "consumer.auto_offset_reset", "(got 'newest')"),
        (8, "    cleanup_policy: purge", 8, "topics.ticket_events.cleanup_policy", "'compact,delete'"),
        (4, "    name: cx ticket events", 4, "topics.ticket_events.name", "pattern"),
        (18, "    name: ..", 18, "topics.dead_letters.name", "not a legal Kafka topic name"),
        (34, "  database: cx-stream", 34, "sink.database", "pattern"),
        (20, "    retention: -1d", 20, "topics.dead_letters.retention", "invalid duration"),
        # unknown contract / key not in the contract
        (12, "    contract: satisfaction", 12, "topics.satisfaction_events.contract",
         "unknown contract 'satisfaction'; known: alert, factor_coefficients, indicator_update, satisfaction_event, subscriber_base, supervision_event, ticket_event"),
        (9, "    key: msisdn", 3, "topics.ticket_events", "'msisdn' is not a field of contract"),
    ],
)
def test_invalid_value(
    tmp_path: Path, line: int, new: str, line_no: int, field: str, fragment: str
) -> None:
    [error] = errors_of(edit(line, new), tmp_path)
    assert error.startswith(f"{tmp_path / 'topology.yaml'}:{line_no}: {field}: ")
    assert fragment in error


def test_unknown_key_is_an_error_with_suggestion(tmp_path: Path) -> None:
    errors = errors_of(edit(21, "    cleanup_polcy: delete"), tmp_path)
    assert sorted(e.split(": ", 1)[1] for e in errors) == [
        "topics.dead_letters.cleanup_polcy: unknown key; did you mean 'cleanup_policy'?",
        "topics.dead_letters.cleanup_policy: Field required",
    ]
    by_field = {e.split(": ")[1]: int(e.split(":")[1]) for e in errors}
    assert by_field["topics.dead_letters.cleanup_polcy"] == 21  # the typo itself
    assert by_field["topics.dead_letters.cleanup_policy"] == 17  # missing: its parent


def test_unknown_top_level_key(tmp_path: Path) -> None:
    [error] = errors_of(VALID + "windows:\n  - 5m\n", tmp_path)
    assert error.endswith(":74: windows: unknown key")


def test_missing_required_topic(tmp_path: Path) -> None:
    text = VALID
    for _ in range(17, 23):  # drop the dead_letters block
        text = edit(17, None, text)
    [error] = errors_of(text, tmp_path)
    assert error.endswith(":2: topics: missing required topic(s): dead_letters")


def test_missing_section_points_at_document_start(tmp_path: Path) -> None:
    text = VALID
    for _ in range(30, 33):  # drop dedup
        text = edit(30, None, text)
    [error] = errors_of(text, tmp_path)
    assert error.endswith(":1: dedup: Field required")


def test_two_topics_on_one_kafka_topic(tmp_path: Path) -> None:
    [error] = errors_of(edit(18, "    name: cx.ticket-events.v1"), tmp_path)
    assert error.endswith(":2: topics: dead_letters and ticket_events share Kafka topic "
                          "'cx.ticket-events.v1'")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    [error] = errors_of(edit(36, "  dead_letter_ttl: 90d\n  raw_ttl: 30d"), tmp_path)
    assert error.endswith(":37: sink.raw_ttl: duplicate key")


def test_all_errors_reported_one_per_line(tmp_path: Path) -> None:
    text = edit(6, "    partitions: 5000", edit(31, "  horizon: forever", edit(35, "  raw_tl: 400d")))
    errors = errors_of(text, tmp_path)
    lines = sorted(int(e.split(":")[1]) for e in errors)
    assert lines == [6, 31, 33, 35]  # 33: sink.raw_ttl missing -> the `sink:` line


@pytest.mark.parametrize(
    ("text", "line_no", "fragment"),
    [
        (edit(31, "  horizon: [7d"), 32, "expected ',' or ']'"),
        (edit(25, "    batch_max_events: 1"), 25, "mapping values are not allowed here"),
        (edit(14, "\tretention: 7d"), 14, "cannot start any token"),
        (VALID + "---\nversion: 1\n", 74, "expected a single document in the stream, but found"),
    ],
)
def test_bad_yaml(tmp_path: Path, text: str, line_no: int, fragment: str) -> None:
    [error] = errors_of(text, tmp_path)
    assert error.startswith(f"{tmp_path / 'topology.yaml'}:{line_no}: invalid YAML: ")
    assert fragment in error


@pytest.mark.parametrize(("text", "fragment"), [("", "topology file is empty"),
                                                ("- 1\n", "valid dictionary")])
def test_not_a_mapping(tmp_path: Path, text: str, fragment: str) -> None:
    [error] = errors_of(text, tmp_path)
    assert error.startswith(f"{tmp_path / 'topology.yaml'}:1: ")
    assert fragment in error


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="nope.yaml: cannot read topology"):
        load_topology(tmp_path / "nope.yaml")


def test_topology_error_is_value_error() -> None:
    assert issubclass(TopologyError, ValueError)


@pytest.mark.parametrize(
    ("line", "new", "expected"),
    [
        (64, "    ticket: [open_ticket, sla_brech]", ":64: model.factors.ticket.1: Input should be"),
        (66, "    channels: {levels: [hotline, fax], baseline: hotline}", ":66: model.factors.channels: unknown level(s) ['fax']"),
        (59, "  memory: 1", ":59: model.memory: Input should be greater than or equal to 2"),
        (73, '    - {name: sat_drop, indicator: sat_mean, scope: district, window: 2h, comparator: "<", threshold: 7, '
             'severity: warning}', ":73: alerts.rules.0.window: unknown window '2h'; indicators.windows has 1h, 24h"),
        (73, '    - {name: sat_drop, indicator: sat_avg, scope: district, window: 1h, comparator: "<", threshold: 7, '
             'severity: warning}', ":73: alerts.rules.0.indicator: unknown indicator 'sat_avg'"),
        (73, '    - {name: sat_drop, indicator: sat_mean, scope: street, window: 1h, comparator: "<", threshold: 7, '
             'severity: warning}', ":73: alerts.rules.0.scope: Input should be"),
    ],
)
def test_model_section_errors_name_line_and_field(line, new, expected, tmp_path):
    errs = errors_of(edit(line, new), tmp_path)
    assert any(expected in e for e in errs), errs
