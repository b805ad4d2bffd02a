"""Reference data: the subscriber base per district (:mod:`stream.reference.subscribers`)."""

from .subscribers import (
    SEED_EFFECTIVE_FROM,
    SubscriberBases,
    SubscriberBaseService,
    bases_from_world,
    publish_bases,
    seed_embedded,
    seed_if_empty,
)

__all__ = [
    "SEED_EFFECTIVE_FROM",
    "SubscriberBaseService",
    "SubscriberBases",
    "bases_from_world",
    "publish_bases",
    "seed_embedded",
    "seed_if_empty",
]
