"""Event contracts: what upstream systems publish.

The pydantic models are the source of truth; ``schemas/*.json`` is exported
from them (``cxstream schemas export``) and a test fails when the two drift.
"""

from .common import BusinessLine, Channel, CustomerTier, Envelope, Region
from .satisfaction import HotlineDimensions, SatisfactionEvent
from .ticket import ClosureType, TicketEvent, TicketStep

#: contract name (as used in topology.yaml) -> model
CONTRACTS: dict[str, type[Envelope]] = {
    "ticket_event": TicketEvent,
    "satisfaction_event": SatisfactionEvent,
}

__all__ = [
    "CONTRACTS",
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
