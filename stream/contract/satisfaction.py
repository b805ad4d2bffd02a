"""Instant-satisfaction events (topic ``cx.satisfaction-events.v1``).

Right after a contact the customer scores it: an overall score, for hotline
contacts six dimensions, often an NPS answer and "was your problem solved?".
If the contact followed a complaint, ``ticket_id`` links the two: that is how
the customer's view of a resolution is compared with the operator's.

>>> from stream.contract import SatisfactionEvent
>>> e = SatisfactionEvent.model_validate_json(
...     '{"schema_version": 1, "event_id": "s-1", "event_time": "2026-11-20T10:00:00+08:00",'
...     ' "source_system": "SURVEY", "customer_id": "c-9", "contact_id": "k-1", "channel": "hotline",'
...     ' "region": {"province": "P01", "city": "P01-C01", "district": "P01-C01-D01"},'
...     ' "overall_score": 4, "nps": 9, "problem_solved": false}')
>>> e.overall_score, e.nps, e.problem_solved
(4, 9, False)
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .common import BusinessLine, Channel, Code, CustomerTier, Envelope, Identifier, Region

Score = Annotated[int, Field(ge=1, le=10)]
"""Satisfaction on a 1-10 scale (10 = very satisfied)."""


class HotlineDimensions(BaseModel):
    """The six hotline satisfaction dimensions, each 1-10; any may be skipped by the customer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    overall_service: Score | None = Field(default=None, description="Overall service of the call.")
    reach_speed: Score | None = Field(default=None, description="Speed of reaching an agent.")
    ivr_menu: Score | None = Field(default=None, description="The IVR menu.")
    agent_attitude: Score | None = Field(default=None, description="The agent's attitude.")
    agent_ability: Score | None = Field(default=None, description="The agent's ability to solve the problem.")
    call_outcome: Score | None = Field(default=None, description="The outcome of the call.")


class SatisfactionEvent(Envelope):
    """A customer's score of one contact."""

    contact_id: Identifier = Field(description="Id of the scored contact (call, visit, session).")
    channel: Channel = Field(description="Channel of the scored contact.")
    region: Region = Field(description="Where the customer is served.")
    overall_score: Score = Field(description="Overall satisfaction, 1-10 (CSAT counts 8-10 as satisfied).")
    ticket_id: Identifier | None = Field(
        default=None, description="The complaint ticket this contact follows up, if any (a call-back, a revisit)."
    )
    business_line: BusinessLine | None = Field(default=None, description="Business line the contact was about.")
    customer_tier: CustomerTier | None = Field(default=None, description="Customer value tier.")
    plan: Code | None = Field(default=None, description="The customer's plan / package code.")
    dimensions: HotlineDimensions | None = Field(
        default=None, description="The six hotline dimensions; only hotline contacts carry them."
    )
    nps: int | None = Field(
        default=None, ge=0, le=10, description="Likelihood to recommend, 0-10 (promoter 9-10, detractor 0-6)."
    )
    problem_solved: bool | None = Field(default=None, description="The customer's answer to 'was your problem solved?'.")
