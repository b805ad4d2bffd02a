"""Vocabulary shared by every event contract.

Closed vocabularies (channel, business line, customer tier) are enums: an
unknown code is rejected with a reason naming the field, because indicators are
cut by them. Open vocabularies (complaint category, phenomenon, department,
problem location) are free codes, checked for shape only, because each operator
has its own catalogue and they change without a release.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

Code = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"),
]
"""A catalogue code: letters, digits, ``_ . : -``; 1-64 characters."""

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
"""An identifier assigned by an upstream system (ticket, customer, event)."""

#: the instants ClickHouse's DateTime64 stores (1900-2299, UTC)
TIME_RANGE = (datetime(1900, 1, 1, tzinfo=timezone.utc), datetime(2299, 12, 31, 23, 59, 59, tzinfo=timezone.utc))

# A placeholder such as 0001-01-01 or 9999-12-31 is rejected (dead letter, reason out_of_range): ClickHouse cannot
# store it, and no step happened then. Checked by pydantic-core itself: a Python validator cost ~1 µs per event.
EventTime = Annotated[AwareDatetime, Field(ge=TIME_RANGE[0], le=TIME_RANGE[1])]
"""A time with its UTC offset, between 1900 and 2299."""


class Channel(StrEnum):
    """Where the customer made contact."""

    store = "store"
    app_web = "app_web"
    social = "social"  # WeChat / Weibo
    hotline = "hotline"
    field_visit = "field_visit"  # installation & maintenance visit


class BusinessLine(StrEnum):
    """Business line the contact or complaint is about."""

    mobile = "mobile"
    broadband = "broadband"
    enterprise = "enterprise"
    value_added = "value_added"


class CustomerTier(StrEnum):
    """Customer value tier (drives priority and is a factor in the satisfaction model)."""

    platinum = "platinum"
    gold = "gold"
    silver = "silver"
    standard = "standard"


class Region(BaseModel):
    """Where the customer is served: province / city / district codes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    province: Code = Field(description="Province code, e.g. `P01`.")
    city: Code = Field(description="City code, unique network-wide, e.g. `P01-C02`.")
    district: Code = Field(description="District code, unique network-wide, e.g. `P01-C02-D03`.")


class Envelope(BaseModel):
    """Fields every event carries, whatever its stream."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    schema_version: int = Field(
        description="Contract major version. This document describes version 1; a breaking change bumps it "
        "and gets a new topic (`...v2`).",
        ge=1,
        le=1,
    )
    event_id: Identifier = Field(
        description="Unique id of this event, assigned by the source system. Resending an event with the same "
        "`event_id` is safe: it is counted once (idempotency)."
    )
    event_time: EventTime = Field(
        description="When the step happened in the source system (ISO 8601 with offset, e.g. "
        "`2026-11-20T09:15:00+08:00`), between 1900 and 2299 UTC. Indicators use event time, not arrival time."
    )
    source_system: Code = Field(
        description="Code of the system that produced the event, e.g. `CRM`, `HOTLINE`, `NOC`, `FIELD`, `SURVEY`. "
        "Data-quality figures are reported per source system."
    )
    customer_id: Identifier = Field(
        description="Pseudonymous customer id (never a phone number or name). Also the Kafka message key."
    )
