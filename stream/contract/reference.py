"""Reference data and derived streams (not upstream events).

``SubscriberBase`` is the subscriber count of a district from a date on, on the
compacted topic ``cx.subscriber-base.v1`` (key: district); complaint rates per
10k subscribers use the base in force at the window start.
``IndicatorUpdate`` is what the indicator stage publishes on
``cx.indicator-updates.v1``: one writer's partial counters of the cells a batch
changed (sum them over writers for a cell's value).
``FactorCoefficients`` is what the factor model publishes on
``cx.factor-coefficients.v1``: one model's coefficients at one publication.
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


class IndicatorCells(BaseModel):
    """One writer's partial counters of the changed cells, as columns: element ``i`` of every list is cell ``i``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: list[str] = Field(description="Window name from topology.yaml, e.g. `1h`, `24h`.")
    window_start: list[AwareDatetime] = Field(description="Window start (UTC).")
    window_end: list[AwareDatetime] = Field(description="Window end, exclusive (UTC).")
    channel: list[str] = Field(description="Channel of the cell.")
    business_line: list[str] = Field(description="Business line of the cell ('' when the events did not say).")
    counters: dict[str, list[float]] = Field(
        description="Counter name -> value per cell (see docs/indicators.md); counters zero in every cell are left out."
    )


class IndicatorUpdate(BaseModel):
    """The cells of one district that one batch changed (one writer's partial counters).

    A cell's value is the sum of its partials over writers (the newest
    ``version`` of each); roll-ups sum cells. Indicators are ratios of the
    counters, defined in docs/indicators.md. One message per district and batch,
    cells as columns, keeps the topic's rate and size independent of how many
    windows a batch touches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(ge=1, le=1, description="Contract major version (1).")
    province: str = Field(description="Province code of the district.")
    city: str = Field(description="City code of the district.")
    district: str = Field(description="District code; also the Kafka message key.")
    writer: int = Field(ge=0, description="Id of the worker process that wrote these partials (new at every start).")
    version: int = Field(ge=0, description="Monotonic per writer: a newer version of a partial replaces the older.")
    cells: IndicatorCells = Field(description="The changed cells of this district, column by column.")


class FactorEstimate(BaseModel):
    """One factor's effect on the overall score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coefficient: float = Field(description="Score points per unit of the factor (negative: it lowers satisfaction).")
    stderr: float = Field(ge=0, description="Standard error of the coefficient, points.")


class FactorCoefficients(BaseModel):
    """One district's (or the network's) factor model at one publication.

    Published every ``model.publish_interval`` for each model that learned since
    the last publication. ``shard`` is the set of satisfaction partitions the
    publishing worker learns from: with several workers, combine the newest
    message of each shard by inverse-variance weighting (``1 / stderr^2``).
    Factor names and meanings: stream/model/features.py and topology.yaml
    (``model.factors``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(ge=1, le=1, description="Contract major version (1).")
    district: str = Field(description="District code, or `*` for the network-wide model; also the Kafka message key.")
    province: str | None = Field(description="Province code of the district (null for the network).")
    city: str | None = Field(description="City code of the district (null for the network).")
    shard: str = Field(description="Satisfaction partitions the publishing worker learns from, e.g. `0,1,2`.")
    as_of: AwareDatetime = Field(description="Event time of the newest satisfaction event the model learned.")
    published_at: AwareDatetime = Field(description="When this estimate was published (wall clock).")
    n: int = Field(ge=0, description="Satisfaction events learned.")
    n_eff: float = Field(ge=0, description="Equally weighted events the forgetting fit is worth.")
    intercept: float = Field(description="Score with every factor at 0 (the baseline levels).")
    residual_sd: float = Field(ge=0, description="Typical prediction error of the score, points.")
    factors: dict[str, FactorEstimate] = Field(description="Factor name -> its estimated effect.")
