"""Seeded, deterministic simulator of upstream traffic (tickets and satisfaction events).

``World`` is the operator (regions, subscriber bases, catalogues), ``generate``
produces Kafka records with planted effects and defects, ``publish`` sends them.
"""

from .plants import Plants, default_plants
from .traffic import SimRecord, Simulation, generate
from .world import District, World

__all__ = ["District", "Plants", "SimRecord", "Simulation", "World", "default_plants", "generate"]
