"""Complaint-ticket lifecycle events (topic ``cx.ticket-events.v1``).

Every step of a ticket's life is one event: created on a channel, dispatched
(and handed off) to a responsible department, worked, closed with a closure
type, perhaps reopened, perhaps followed by a call-back. Steps come from
different source systems; ``ticket_id`` ties them together.

>>> from stream.contract import TicketEvent
>>> e = TicketEvent.model_validate_json(
...     '{"schema_version": 1, "event_id": "e-1", "event_time": "2026-11-20T09:15:00+08:00",'
...     ' "source_system": "CRM", "customer_id": "c-9", "ticket_id": "T-1", "step": "created",'
...     ' "region": {"province": "P01", "city": "P01-C01", "district": "P01-C01-D01"},'
...     ' "channel": "hotline", "business_line": "broadband", "complaint_category": "network",'
...     ' "complaint_phenomenon": "slow_speed", "customer_tier": "gold",'
...     ' "sla_deadline": "2026-11-21T09:15:00+08:00"}')
>>> e.step, e.channel
('created', 'hotline')
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from .common import BusinessLine, Channel, Code, CustomerTier, Envelope, EventTime, Identifier, Region


class TicketStep(StrEnum):
    """Lifecycle step: created, dispatched (or handed off), worked, closed, reopened, callback."""

    created = "created"  # the complaint is registered on a channel
    dispatched = "dispatched"  # assigned (or handed off) to a responsible department
    worked = "worked"  # a department records progress
    closed = "closed"  # closed with a closure type
    reopened = "reopened"  # a closed ticket is reopened: the sign of a false closure
    callback = "callback"  # the customer is called back after closure


class ClosureType(StrEnum):
    """How the operator closed the ticket (the internal view of resolution)."""

    resolved = "resolved"
    explained = "explained"  # explained to the customer, nothing changed
    partially_resolved = "partially_resolved"
    unresolved = "unresolved"
    withdrawn = "withdrawn"  # the customer withdrew the complaint


# Which optional fields each step must carry. Kept as data so the rule is
# visible in one place and exported into the schema description.
REQUIRED_BY_STEP: dict[str, tuple[str, ...]] = {
    "created": (
        "region",
        "channel",
        "business_line",
        "complaint_category",
        "complaint_phenomenon",
        "customer_tier",
        "sla_deadline",
    ),
    "dispatched": ("department",),
    "worked": ("department",),
    "closed": ("closure_type",),
    "reopened": (),
    "callback": (),
}


class TicketEvent(Envelope):
    """One step in the life of a complaint ticket.

    Mandatory fields by step: ``created`` needs region, channel, business_line,
    complaint_category, complaint_phenomenon, customer_tier, sla_deadline;
    ``dispatched`` and ``worked`` need department; ``closed`` needs closure_type.
    """

    # The per-step requirements, also as JSON Schema so upstream validators enforce them.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"step": {"const": step}}},
                    "then": {"required": list(fields), "properties": {f: {"not": {"type": "null"}} for f in fields}},
                }
                for step, fields in REQUIRED_BY_STEP.items()
                if fields
            ]
        }
    )

    ticket_id: Identifier = Field(description="Complaint ticket id; the same on every step of one ticket.")
    step: TicketStep = Field(description="Which lifecycle step this event records.")
    region: Region | None = Field(
        default=None, description="Where the customer is served. Mandatory on `created`; optional later."
    )
    channel: Channel | None = Field(
        default=None, description="Channel the complaint came in on. Mandatory on `created`."
    )
    business_line: BusinessLine | None = Field(
        default=None, description="Business line complained about. Mandatory on `created`."
    )
    complaint_category: Code | None = Field(
        default=None,
        description="Complaint category from the operator's catalogue (e.g. `network`, `billing`, `installation`, "
        "`service`, `product`). Mandatory on `created`.",
    )
    complaint_phenomenon: Code | None = Field(
        default=None,
        description="What the customer experiences (e.g. `no_signal`, `slow_speed`, `overcharge`). "
        "Mandatory on `created`.",
    )
    customer_tier: CustomerTier | None = Field(default=None, description="Customer value tier. Mandatory on `created`.")
    department: Code | None = Field(
        default=None,
        description="Department holding the ticket after this step (responsible unit). Mandatory on `dispatched` "
        "and `worked`.",
    )
    problem_location: Code | None = Field(
        default=None,
        description="Where the root cause was found (e.g. `access_network`, `core_network`, `billing_system`, "
        "`customer_premises`). Usually on `closed`.",
    )
    closure_type: ClosureType | None = Field(default=None, description="How the ticket was closed. Mandatory on `closed`.")
    sla_deadline: EventTime | None = Field(
        default=None,
        description="When the ticket must be closed by (1900-2299 UTC). Mandatory on `created`; a later value "
        "replaces it.",
    )
    note: str | None = Field(default=None, max_length=2000, description="Free text from the handler; not analysed.")

    @model_validator(mode="after")
    def _mandatory_for_step(self) -> "TicketEvent":
        missing = [f for f in REQUIRED_BY_STEP[self.step] if getattr(self, f) is None]
        if missing:
            raise PydanticCustomError(
                "missing_for_step",
                "step '{step}' requires {fields}",
                {"step": self.step, "fields": ", ".join(missing)},
            )
        if self.sla_deadline is not None and self.step == "created" and self.sla_deadline <= self.event_time:
            raise ValueError("sla_deadline must be after event_time on 'created'")
        return self
