"""Reference data and derived streams (not upstream events).

``SubscriberBase`` is the subscriber count of a district from a date on, on the
compacted topic ``cx.subscriber-base.v1`` (key: district); complaint rates per
10k subscribers use the base in force at the window start.
``IndicatorUpdate`` is what the indicator stage publishes on
``cx.indicator-updates.v1``: one writer's partial counters of the cells a batch
changed (sum them over writers for a cell's value).
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .common import Code


class SubscriberBase(BaseModel):
    """Subscribers of one district, in force from ``effective_from`` until a later base replaces it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(ge=1, le=1, description="Contract major version (1).")
    province: Code = Field(description="Province code.")
    city: Code = Field(description="City code.")
    district: Code = Field(description="District code; also the Kafka message key.")
    subscribers: int = Field(ge=0, description="Subscribers served in the district.")
    effective_from: AwareDatetime = Field(description="From when this base applies (ISO 8601 with offset).")
    source_system: Code = Field(default="BSS", description="System that published the base.")


class IndicatorCell(BaseModel):
    """One writer's partial counters of one window and cell."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: str = Field(description="Window name from topology.yaml, e.g. `1h`, `24h`.")
    window_start: AwareDatetime = Field(description="Window start (UTC).")
    window_end: AwareDatetime = Field(description="Window end, exclusive (UTC).")
    channel: str = Field(description="Channel of the cell.")
    business_line: str = Field(description="Business line of the cell ('' when the events did not say).")
    writer: int = Field(ge=0, description="Id of the worker process that wrote this partial (new at every start).")
    counters: dict[str, float] = Field(description="Counter name -> value (see docs/indicators.md; zeros omitted).")


class IndicatorUpdate(BaseModel):
    """The cells of one district that one batch changed (one writer's partial counters).

    A cell's value is the sum of its partials over writers (the newest
    ``version`` of each); roll-ups sum cells. Indicators are ratios of the
    counters, defined in docs/indicators.md. One message per district and batch
    keeps the topic's rate independent of how many windows a batch touches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(ge=1, le=1, description="Contract major version (1).")
    province: str = Field(description="Province code of the district.")
    city: str = Field(description="City code of the district.")
    district: str = Field(description="District code; also the Kafka message key.")
    version: int = Field(ge=0, description="Monotonic per worker: a newer version of a partial replaces the older.")
    cells: list[IndicatorCell] = Field(description="The changed cells of this district.")
