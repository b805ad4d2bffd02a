"""The topology: typed view of ``topology.yaml``.

``topology.yaml`` is the declarative description of the streams (topics,
consumer, dedup, sink; later windows and rules). It is validated strictly:
unknown keys, wrong types and out-of-range values are errors, and every error
names the file, the line and the field path so an operator can fix it without
reading Python::

    topology.yaml:14: topics.ticket_events.partitions: Input should be less than or equal to 1024 (got 5000)

Connection settings (where Kafka and ClickHouse are) live in
:mod:`stream.settings`, not here.
"""

from __future__ import annotations

import difflib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from .contract import CONTRACTS, EVENT_CONTRACTS

__all__ = [
    "AlertRule",
    "AlertSettings",
    "ConsumerSettings",
    "DedupSettings",
    "Duration",
    "FactorSet",
    "IndicatorSettings",
    "Levels",
    "ModelSettings",
    "QualitySettings",
    "WindowSpec",
    "SinkSettings",
    "StateSettings",
    "TicketStateSettings",
    "TopicSpec",
    "Topology",
    "TopologyError",
    "default_topology_path",
    "format_duration",
    "load_topology",
    "parse_duration",
    "parse_topology",
]

#: Environment variable naming the topology file (same name as ``Settings.topology``).
TOPOLOGY_ENV = "CXSTREAM_TOPOLOGY"
#: Topics the service cannot run without.
REQUIRED_TOPICS = ("ticket_events", "satisfaction_events", "dead_letters")

# --------------------------------------------------------------------------- durations

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
# "ms" must be tried before "m"; compound values like "1h30m" are allowed.
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w))+")


def parse_duration(value: Any) -> timedelta:
    """Parse ``200ms``, ``2s``, ``5m``, ``1h``, ``7d``, ``2w`` or ``1h30m``.

    Integers are seconds; a ``timedelta`` passes through. Negative durations
    are refused (nothing in the topology can last less than nothing).

    >>> parse_duration("200ms")
    datetime.timedelta(microseconds=200000)
    >>> parse_duration("1h30m") == timedelta(minutes=90)
    True
    >>> parse_duration(30)
    datetime.timedelta(seconds=30)
    >>> parse_duration("7 days")
    Traceback (most recent call last):
    ...
    ValueError: invalid duration '7 days': use an integer with a unit ms, s, m, h, d, w (e.g. 200ms, 5m, 7d)
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):  # bool is an int subclass; `true` is not 1 second
        raise ValueError(f"invalid duration {value!r}: expected e.g. 200ms, 5m, 7d")
    elif isinstance(value, int):
        result = timedelta(seconds=value)
    elif isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        result = sum(
            (int(n) * _UNITS[u] for n, u in _PART.findall(value.strip())), timedelta()
        )
    else:
        raise ValueError(
            f"invalid duration {value!r}: use an integer with a unit "
            "ms, s, m, h, d, w (e.g. 200ms, 5m, 7d)"
        )
    if result < timedelta():
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return result


def format_duration(value: timedelta) -> str:
    """Inverse of :func:`parse_duration`: the largest unit that divides exactly.

    >>> format_duration(timedelta(days=400)), format_duration(timedelta(milliseconds=200))
    ('400d', '200ms')
    """
    ms = value // _UNITS["ms"]
    for unit in ("w", "d", "h", "m", "s"):
        step = _UNITS[unit] // _UNITS["ms"]
        if ms and ms % step == 0:
            return f"{ms // step}{unit}"
    return f"{ms}ms"


#: A duration field: parses ``"5m"``-style strings (or int seconds) into a
#: ``timedelta`` and dumps back to the same compact string.
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]

# --------------------------------------------------------------------------- models

# Kafka: 1-249 of [a-zA-Z0-9._-] ("." and ".." are refused by a validator:
# pydantic's regex engine has no look-ahead).
_TOPIC_NAME = r"^[a-zA-Z0-9._-]{1,249}$"
# A ClickHouse identifier usable without quoting.
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    """Base: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSpec(_Strict):
    """One Kafka topic."""

    name: str = Field(pattern=_TOPIC_NAME, description="Kafka topic name.")
    contract: str | None = Field(
        default=None,
        description="Event contract (key of `stream.contract.CONTRACTS`) of the values; "
        "absent for internal topics such as dead letters.",
    )
    partitions: int = Field(ge=1, le=1024, description="Partition count.")
    retention: Duration = Field(description="Kafka `retention.ms`, e.g. `7d`.")
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = Field(
        description="Kafka `cleanup.policy`."
    )
    key: str = Field(min_length=1, description="Field the message key is taken from.")

    @field_validator("name")
    @classmethod
    def _not_dots(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError(f"{value!r} is not a legal Kafka topic name")
        return value

    @field_validator("contract")
    @classmethod
    def _known_contract(cls, value: str | None) -> str | None:
        if value is not None and value not in CONTRACTS:
            raise ValueError(
                f"unknown contract {value!r}; known: {', '.join(sorted(CONTRACTS))}"
            )
        return value

    @model_validator(mode="after")
    def _key_in_contract(self) -> TopicSpec:
        # The key must be a field of the contract, or producers cannot key by it.
        if self.contract in CONTRACTS and self.key not in CONTRACTS[self.contract].model_fields:
            raise ValueError(
                f"key {self.key!r} is not a field of contract {self.contract!r}"
            )
        return self

    def kafka_config(self) -> dict[str, str]:
        """Topic-level Kafka configs, as strings (what admin clients expect).

        >>> TopicSpec(name="t", partitions=1, retention="7d", cleanup_policy="delete",
        ...           key="k").kafka_config()
        {'retention.ms': '604800000', 'cleanup.policy': 'delete'}
        """
        return {
            "retention.ms": str(self.retention // _UNITS["ms"]),
            "cleanup.policy": self.cleanup_policy,
        }


class ConsumerSettings(_Strict):
    """How the ingest consumer polls its source topics."""

    group_id: str = Field(min_length=1, description="Kafka consumer group id.")
    batch_max_events: int = Field(ge=1, description="Events taken per poll across partitions.")
    batch_max_wait: Duration = Field(description="How long a poll waits to fill a batch.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        description="Where a new group starts reading."
    )
    session_timeout: Duration = Field(description="Kafka group session timeout.")
    rebalance_timeout: Duration = Field(description="Kafka group rebalance timeout.")


class DedupSettings(_Strict):
    """Idempotency on ``event_id``."""

    horizon: Duration = Field(description="A resent event_id within this horizon counts once.")
    max_ids: int = Field(ge=1, description="Memory bound for the seen-set.")


class SinkSettings(_Strict):
    """ClickHouse sink."""

    database: str = Field(pattern=_IDENTIFIER, description="ClickHouse database.")
    raw_ttl: Duration = Field(description="TTL of raw event tables.")
    dead_letter_ttl: Duration = Field(description="TTL of the dead-letter table.")
    insert_retries: int = Field(ge=0, description="Retries of a failed insert.")
    retry_backoff: Duration = Field(description="Initial backoff between insert retries.")


class TicketStateSettings(_Strict):
    """Complaint-ticket lifecycle state kept by the stream (bounded; rebuilt from ClickHouse)."""

    lateness: Duration = Field(
        description="How late (in event time) an event may arrive and still be placed in order; "
        "SLA checks of a partition that is behind run this far behind its newest event."
    )
    closed_retention: Duration = Field(
        description="How long a closed ticket stays in stream state after its close (to catch reopens, "
        "call-backs and follow-up satisfaction)."
    )
    open_max_age: Duration = Field(
        description="An open ticket with no event for this long leaves stream state (it stays in ClickHouse)."
    )
    max_tickets: int = Field(ge=1, description="Memory bound: tickets held per worker; the stalest leave first.")
    sla_check_interval: Duration = Field(description="How often silent open tickets are checked against their SLA.")


class StateSettings(_Strict):
    """Stream state."""

    tickets: TicketStateSettings


class WindowSpec(_Strict):
    """One indicator window: tumbling ``[k*size, (k+1)*size)`` or rolling ``size`` long every ``step``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_]{1,16}$", description="Window name as stored (e.g. `1h`).")
    kind: Literal["tumbling", "rolling"]
    size: Duration
    step: Duration | None = Field(default=None, description="Rolling windows only: how often one starts.")

    @model_validator(mode="after")
    def _step(self) -> WindowSpec:
        if self.kind == "rolling":
            if self.step is None:
                raise ValueError("a rolling window needs a step")
            if self.size % self.step:
                raise ValueError("a rolling window's size must be a multiple of its step")
        elif self.step is not None:
            raise ValueError("a tumbling window has no step")
        return self

    @property
    def hop(self) -> timedelta:
        return self.step if self.kind == "rolling" else self.size


class IndicatorSettings(_Strict):
    """Rolling district indicators (docs/indicators.md)."""

    lateness: Duration = Field(description="How long after its end a window still accepts late events.")
    satisfied_min_score: int = Field(ge=1, le=10, description="CSAT counts scores at or above this as satisfied.")
    windows: list[WindowSpec] = Field(min_length=1)

    @field_validator("windows")
    @classmethod
    def _unique(cls, windows: list[WindowSpec]) -> list[WindowSpec]:
        names = [w.name for w in windows]
        if len(names) != len(set(names)):
            raise ValueError(f"window names must be unique: {names}")
        sizes = {w.size for w in windows if w.kind == "tumbling"}
        for w in windows:
            # A rolling window is the sum of the tumbling windows of its step.
            if w.kind == "rolling" and w.step not in sizes:
                raise ValueError(f"rolling window {w.name!r} needs a tumbling window of its step ({format_duration(w.step)})")
        return windows


class QualitySettings(_Strict):
    """Data-quality report per source system (``cxstream quality``, metrics, ``quality_reports``)."""

    window: Duration = Field(description="Arrival-time window of the stored report and the exported metrics.")
    horizon: Duration = Field(description="How far back the worker recomputes the stored report.")
    refresh_interval: Duration = Field(description="How often the worker recomputes, stores and exports it.")


class Levels(_Strict):
    """One categorical factor: a 0/1 column per level except the baseline (which the intercept absorbs)."""

    levels: list[str] = Field(description="Levels that get a column (the baseline may be listed; it gets none).")
    baseline: str | None = Field(default=None, description="The reference level; events at it, or at an unlisted level, get no column.")

    @model_validator(mode="after")
    def _distinct(self) -> "Levels":
        if len(self.levels) != len(set(self.levels)):
            raise ValueError(f"levels must be distinct: {self.levels}")
        return self


#: ticket-handling factors the feature builder knows (stream/model/features.py)
TICKET_FACTORS = ("open_ticket", "sla_breach", "reopen", "last_handling_h")


class FactorSet(_Strict):
    """Which factors the model estimates (see stream/model/features.py for their exact meaning)."""

    complaint_categories: list[str] = Field(
        description="complaints_<category>: the customer's complaints of it within the horizon; others count as complaints_other."
    )
    ticket: list[Literal["open_ticket", "sla_breach", "reopen", "last_handling_h"]] = Field(
        description="Ticket-handling factors: open_ticket, sla_breach, reopen, last_handling_h."
    )
    closure_types: Levels = Field(description="closure_<type> of the ticket the contact follows up.")
    channels: Levels = Field(description="channel_<channel> of the contact.")
    customer_tiers: Levels = Field(description="tier_<tier> of the customer.")
    plans: Levels = Field(description="plan_<plan> of the customer.")

    @field_validator("closure_types", "channels", "customer_tiers")
    @classmethod
    def _known_levels(cls, levels: Levels, info) -> Levels:
        from .contract import Channel, ClosureType, CustomerTier

        enum = {"closure_types": ClosureType, "channels": Channel, "customer_tiers": CustomerTier}[info.field_name]
        known = [e.value for e in enum]
        unknown = [v for v in [*levels.levels, levels.baseline] if v is not None and v not in known]
        if unknown:
            raise ValueError(f"unknown level(s) {unknown}; known: {known}")
        return levels


class ModelSettings(_Strict):
    """The online factor model (stream/model)."""

    horizon: Duration = Field(description="A complaint counts as a factor of satisfaction events this long after it was created.")
    max_customers: int = Field(ge=1, description="Memory bound of customer histories; the least recently updated leave first.")
    memory: int | None = Field(
        ge=2, description="Forgetting: an event k events old (of its model) weighs (1 - 1/memory)^k; null never forgets."
    )
    prior: float = Field(gt=0, description="Pseudo-events pulling every coefficient towards 0 (shrinks thin districts).")
    publish_interval: Duration = Field(description="How often coefficients, exposures and a model snapshot are stored and sent.")
    factors: FactorSet


#: indicators a rule can watch: name -> (numerator counter or formula, volume counter); see docs/indicators.md
ALERT_INDICATORS = (
    "complaints", "complaint_rate_per_10k", "sat_mean", "csat", "nps", "avg_handling_s", "sla_overdue_rate",
    "fcr_rate", "reopen_rate", "perception_gap_rate", "perceived_slow_rate",
    "dim_overall_service_mean", "dim_reach_speed_mean", "dim_ivr_menu_mean", "dim_agent_attitude_mean",
    "dim_agent_ability_mean", "dim_call_outcome_mean",
)  # fmt: skip
SCOPE_LEVELS = ("district", "city", "province", "network")


class ChangeSpec(_Strict):
    """Compare with the indicator's own baseline instead of an absolute threshold."""

    kind: Literal["percent", "zscore"] = Field(
        description="percent: change against the mean of the previous `baseline_windows` windows; "
        "zscore: standard scores against the same hour of week in previous weeks."
    )
    baseline_windows: int = Field(default=24, ge=1, le=10_000, description="percent: how many previous windows.")
    min_weeks: int = Field(default=2, ge=1, le=52, description="zscore: weeks of history needed before it can fire.")


class ForecastSpec(_Strict):
    """Trend warning: forecast the indicator and warn before it crosses the threshold."""

    horizon: int = Field(ge=1, le=1000, description="How many windows ahead the forecast looks.")
    min_windows: int = Field(default=6, ge=2, description="Windows of history before forecasting.")
    alpha: float = Field(default=0.5, gt=0, le=1, description="Holt-Winters level smoothing.")
    beta: float = Field(default=0.3, gt=0, le=1, description="Holt-Winters trend smoothing.")


class AlertRule(_Strict):
    """One threshold rule over one indicator (docs/alerts.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Unique rule name (snake_case); part of every alert's identity.")
    indicator: str = Field(description="An indicator of docs/indicators.md, e.g. sat_mean, complaints, sla_overdue_rate.")
    scope: Literal["district", "city", "province", "network"] = Field(description="Where the indicator is aggregated.")
    by: list[Literal["channel", "business_line"]] = Field(default_factory=list, description="Further split of the scope.")
    window: str = Field(description="A window name from indicators.windows.")
    comparator: Literal["<", "<=", ">", ">="] = Field(description="Breach when `value comparator threshold`.")
    threshold: float = Field(description="Absolute threshold, or with `change`: percent change / z-score.")
    change: ChangeSpec | None = Field(default=None, description="Compare with the indicator's own baseline.")
    hysteresis: float = Field(default=0.0, ge=0, description="A firing alert resolves only beyond threshold by this much.")
    min_volume: float = Field(default=0, ge=0, description="Windows with less volume (the indicator's denominator) are not judged.")
    for_: int = Field(default=1, ge=1, le=1000, alias="for", description="Consecutive breaching windows before firing.")
    keep_firing_for: int = Field(default=1, ge=1, le=1000, description="Consecutive clear windows before resolving.")
    severity: Literal["critical", "warning", "info"] = Field(description="Alertmanager severity label.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels (team, service, ...).")
    runbook: str | None = Field(default=None, description="Runbook URL for on-call.")
    summary: str | None = Field(default=None, description="One line for humans; defaults to a generated one.")
    forecast: ForecastSpec | None = Field(default=None, description="Predicted-breach warnings (absolute thresholds).")

    @field_validator("indicator")
    @classmethod
    def _known_indicator(cls, value: str) -> str:
        if value not in ALERT_INDICATORS:
            raise ValueError(f"unknown indicator {value!r}; known: {', '.join(ALERT_INDICATORS)}")
        return value

    @model_validator(mode="after")
    def _forecast_needs_threshold(self) -> "AlertRule":
        if self.forecast is not None and self.change is not None:
            raise ValueError("forecast works on absolute thresholds only (no `change`)")
        return self


class DeliverySettings(_Strict):
    """Delivery to Alertmanager and a webhook (their URLs come from CXSTREAM_* variables)."""

    retries: int = Field(ge=0, le=100, description="Attempts after the first before an alert is given up.")
    backoff: Duration = Field(description="First retry delay; doubles up to 30 s.")
    resend_interval: Duration = Field(description="Firing alerts are re-sent this often (Alertmanager expires silent ones).")
    queue_max: int = Field(ge=1, description="Alerts waiting for delivery; beyond, the oldest is dropped and counted.")


class AlertSettings(_Strict):
    """Threshold alerts, their delivery and supervision tickets."""

    state_horizon: Duration = Field(description="How far back window values are kept for evaluation.")
    dashboard_url: str | None = Field(default=None, description="Grafana base URL for links in alerts.")
    delivery: DeliverySettings
    rules: list[AlertRule] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[AlertRule]) -> list[AlertRule]:
        names = [r.name for r in rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique: {dup}")
        return rules


class Topology(_Strict):
    """The whole ``topology.yaml``."""

    version: Literal[1] = Field(description="Format version of this file.")
    topics: dict[str, TopicSpec] = Field(description="Logical topic name -> topic.")
    consumer: ConsumerSettings
    dedup: DedupSettings
    state: StateSettings
    indicators: IndicatorSettings
    quality: QualitySettings
    model: ModelSettings
    alerts: AlertSettings
    sink: SinkSettings

    @field_validator("topics")
    @classmethod
    def _topics_complete(cls, topics: dict[str, TopicSpec]) -> dict[str, TopicSpec]:
        missing = [t for t in REQUIRED_TOPICS if t not in topics]
        if missing:
            raise ValueError(f"missing required topic(s): {', '.join(missing)}")
        seen: dict[str, str] = {}
        for logical, spec in topics.items():
            # Two logical topics on one Kafka topic would mix their events.
            if spec.name in seen:
                raise ValueError(
                    f"{logical} and {seen[spec.name]} share Kafka topic {spec.name!r}"
                )
            seen[spec.name] = logical
        return topics

    @model_validator(mode="after")
    def _co_partitioned(self) -> "Topology":
        # Tickets and satisfaction events of a customer must meet in one worker
        # (follow-ups link to tickets; indicator partials are per partition number).
        sources = self.source_topics()
        if len({t.partitions for t in sources.values()}) > 1 or len({t.key for t in sources.values()}) > 1:
            detail = ", ".join(f"{k}: {t.partitions} partitions keyed by {t.key}" for k, t in sources.items())
            raise ValueError(f"source topics must be co-partitioned (same partitions and key): {detail}")
        return self

    def source_topics(self) -> dict[str, TopicSpec]:
        """Topics carrying upstream events (an event contract), by logical name."""
        return {k: t for k, t in self.topics.items() if t.contract in EVENT_CONTRACTS}


# --------------------------------------------------------------------------- loading


class TopologyError(ValueError):
    """``topology.yaml`` is unreadable or invalid; the message has one error per line."""


def default_topology_path() -> Path:
    """``$CXSTREAM_TOPOLOGY``, else ``./topology.yaml``, else the one beside the package."""
    if env := os.environ.get(TOPOLOGY_ENV):
        return Path(env)
    here = Path("topology.yaml")
    return here if here.is_file() else Path(__file__).parents[1] / "topology.yaml"


def load_topology(path: str | Path | None = None) -> Topology:
    """Read and validate a topology file (default: :func:`default_topology_path`).

    Raises :class:`TopologyError` naming file, line and field for every problem.
    """
    path = Path(path) if path is not None else default_topology_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read topology: {exc.strerror or exc}") from exc
    return parse_topology(text, source=str(path))


def parse_topology(text: str, source: str = "topology.yaml") -> Topology:
    """Validate topology YAML ``text``; ``source`` names it in error messages."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()  # node tree: keeps line numbers
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or str(exc)
        if exc.context and problem.startswith("but "):  # "but found ..." needs its context
            problem = f"{exc.context}, {problem}"
        raise TopologyError(f"{source}:{line}: invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise TopologyError(f"{source}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()

    if root is None:
        raise TopologyError(f"{source}:1: topology file is empty")
    # PyYAML keeps the last of duplicate keys silently; that hides typos too.
    errors = _duplicate_keys(root, source)
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        errors += [_format_error(err, root, source) for err in exc.errors()]
    else:
        # Cross-section references: a rule's window must be one of indicators.windows.
        names = {w.name for w in topology.indicators.windows}
        for i, rule in enumerate(topology.alerts.rules):
            if rule.window not in names:
                loc = ("alerts", "rules", i, "window")
                errors.append(f"{source}:{_line_of(root, loc)}: alerts.rules.{i}.window: unknown window "
                              f"{rule.window!r}; indicators.windows has {', '.join(sorted(names))}")  # fmt: skip
    if errors:
        raise TopologyError("\n".join(errors))
    return topology


def _duplicate_keys(node: yaml.Node, source: str, prefix: str = "") -> list[str]:
    """Errors for keys repeated within one mapping, anywhere in the tree."""
    errors: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            path = f"{prefix}{key.value}"
            if key.value in seen:
                errors.append(f"{source}:{key.start_mark.line + 1}: {path}: duplicate key")
            seen.add(key.value)
            errors += _duplicate_keys(value, source, path + ".")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            errors += _duplicate_keys(item, source, f"{prefix}{i}.")
    return errors


def _line_of(root: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """1-based line of the deepest node along ``loc`` that exists in the YAML.

    For a mapping entry the key's line is used (that is where the field "is");
    a missing field therefore points at its parent's key.
    """
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _format_error(err: Any, root: yaml.Node, source: str) -> str:
    """One pydantic error as ``file:line: field.path: message (got value)``."""
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + _suggestion(loc)
    elif err["type"] == "value_error":
        # Our own validators: the message already says what was wrong.
        msg = msg.removeprefix("Value error, ")
    elif err["type"] != "missing" and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return f"{source}:{_line_of(root, loc)}: {path}: {msg}"


def _suggestion(loc: tuple[int | str, ...]) -> str:
    """``; did you mean 'x'?`` for an unknown key close to a known field."""
    model: Any = Topology
    for part in loc[:-1]:  # walk the annotations down to the model holding the key
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            model = model.model_fields[str(part)].annotation
        elif get_origin(model) is dict:
            model = get_args(model)[1]
        else:
            return ""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
