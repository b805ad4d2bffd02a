"""Alerts and supervision tickets: what the alert stage publishes for on-call staff and the audit trail.

``Alert`` is one change of an alert's status on ``cx.alerts.v1`` (key: fingerprint): what crossed which
threshold, where, value against threshold, since when, on how much volume, the factors driving it and
where to look deeper. ``SupervisionEvent`` is one change of a supervision ticket on
``cx.supervision-events.v1`` (key: ticket id): the operators' closed loop, opened by a firing alert,
assigned, acknowledged and closed by people.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class DrivingFactor(BaseModel):
    """One factor behind the scope's satisfaction, from the factor model (docs/factor-model.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factor: str = Field(description="Factor name, e.g. complaints_network, sla_breach.")
    coefficient: float = Field(description="Effect on the overall score, points per unit of the factor.")
    stderr: float = Field(ge=0, description="Standard error of the coefficient.")
    exposure: float = Field(description="Mean value of the factor per satisfaction event in the window.")
    impact: float = Field(description="coefficient x exposure: points of the window's mean score.")


class AlertLinks(BaseModel):
    """Where to look deeper."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    explain: str = Field(description="CLI command explaining the scope's satisfaction in the window.")
    query: str = Field(description="SQL over indicator_rollups / indicator_values giving the indicator's series.")
    dashboard: str | None = Field(default=None, description="Grafana dashboard URL for the scope and time range.")
    runbook: str | None = Field(default=None, description="The rule's runbook.")


class Alert(BaseModel):
    """One change of one alert's status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(ge=1, le=1, description="Contract major version (1).")
    alert_id: str = Field(description="One episode of one alert: fingerprint and the start of its first breaching window.")
    fingerprint: str = Field(description="Stable identity of the rule and scope key; also the Kafka message key.")
    rule: str = Field(description="Rule name from topology.yaml.")
    status: Literal["pending", "firing", "resolved", "inactive", "predicted", "unpredicted"] = Field(
        description="pending: breaching, fewer windows than `for`; firing; resolved; inactive: a pending breach that "
        "did not last; predicted / unpredicted: a trend warning raised / withdrawn."
    )
    severity: Literal["critical", "warning", "info"] = Field(description="From the rule.")
    indicator: str = Field(description="Indicator name (docs/indicators.md).")
    window: str = Field(description="Window name from topology.yaml.")
    scope: Literal["district", "city", "province", "network"] = Field(description="Aggregation level.")
    labels: dict[str, str] = Field(description="Scope labels (province, city, district, channel, business_line) and the rule's labels.")
    comparator: Literal["<", "<=", ">", ">="] = Field(description="Breach when `value comparator threshold` (change rules: the change).")
    threshold: float = Field(description="Absolute threshold, or the percent change / z-score threshold of a change rule.")
    change: Literal["percent", "zscore"] | None = Field(default=None, description="Change rules: against what baseline.")
    value: float | None = Field(description="The indicator's value in the window judged.")
    baseline: float | None = Field(default=None, description="Change rules: the baseline value compared with.")
    volume: float = Field(ge=0, description="The indicator's denominator in the window (responses, due tickets, ...).")
    window_start: AwareDatetime = Field(description="Start of the window judged.")
    window_end: AwareDatetime = Field(description="End of the window judged (exclusive).")
    since: AwareDatetime = Field(description="Start of the first breaching window of this episode.")
    summary: str = Field(description="One line for humans.")
    top_factors: list[DrivingFactor] = Field(default_factory=list, description="What drives satisfaction down in the scope.")
    links: AlertLinks = Field(description="Where to look deeper: explain command, SQL, dashboard, runbook.")
    predicted_value: float | None = Field(default=None, description="Trend warnings: the forecast value at the crossing.")
    predicted_window_start: AwareDatetime | None = Field(default=None, description="Trend warnings: the window forecast to cross.")
    evaluated_at: AwareDatetime = Field(description="When the worker judged it (wall clock).")
    trigger_arrival: AwareDatetime | None = Field(
        default=None, description="Earliest Kafka timestamp of the batch that caused this change (for latency)."
    )


class SupervisionEvent(BaseModel):
    """One change of a supervision ticket (the audit trail of the closed loop)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(ge=1, le=1, description="Contract major version (1).")
    ticket_id: str = Field(description="Supervision ticket id; also the Kafka message key.")
    action: Literal["opened", "assigned", "acknowledged", "closed"] = Field(description="What happened.")
    status: Literal["open", "assigned", "acknowledged", "closed"] = Field(description="The ticket's status after it.")
    at: AwareDatetime = Field(description="When (wall clock).")
    by: str = Field(description="Who: a person, or `cxstream` for an alert-opened ticket.")
    assignee: str | None = Field(default=None, description="Who the ticket is assigned to, after this change.")
    note: str = Field(default="", description="Free text.")
    alert_id: str = Field(description="The alert episode the ticket follows.")
    fingerprint: str = Field(description="The alert's fingerprint.")
    rule: str = Field(description="The alert's rule.")
    alert_status: str = Field(description="The alert's status at the time of this change.")
    closed_while_bad: bool | None = Field(default=None, description="closed: the alert was still firing (the indicator still bad).")
    time_to_ack_s: float | None = Field(default=None, description="Seconds from opening to acknowledgement.")
    time_to_close_s: float | None = Field(default=None, description="Seconds from opening to closing.")
