"""Event contracts: what upstream systems publish.

The pydantic models are the source of truth; ``schemas/*.json`` is exported
from them (``cxstream schemas export``) and a test fails when the two drift.
"""

from pydantic import BaseModel

from .alerts import Alert, SupervisionEvent
from .common import BusinessLine, Channel, CustomerTier, Envelope, Region
from .reference import FactorCoefficients, FactorEstimate, IndicatorCells, IndicatorUpdate, SubscriberBase
from .satisfaction import HotlineDimensions, SatisfactionEvent
from .ticket import ClosureType, TicketEvent, TicketStep

#: upstream event contracts (ingested, validated, stored as raw events)
EVENT_CONTRACTS: dict[str, type[Envelope]] = {
    "ticket_event": TicketEvent,
    "satisfaction_event": SatisfactionEvent,
}

#: every contract name (as used in topology.yaml) -> model; each is exported to schemas/
CONTRACTS: dict[str, type[BaseModel]] = {
    **EVENT_CONTRACTS,
    "subscriber_base": SubscriberBase,
    "indicator_update": IndicatorUpdate,
    "factor_coefficients": FactorCoefficients,
    "alert": Alert,
    "supervision_event": SupervisionEvent,
}

__all__ = [
    "Alert",
    "SupervisionEvent",
    "CONTRACTS",
    "EVENT_CONTRACTS",
    "FactorCoefficients",
    "FactorEstimate",
    "IndicatorCells",
    "IndicatorUpdate",
    "SubscriberBase",
    "BusinessLine",
    "Channel",
    "ClosureType",
    "CustomerTier",
    "Envelope",
    "HotlineDimensions",
    "Region",
    "SatisfactionEvent",
    "TicketEvent",
    "TicketStep",
]
