"""The factor model: how much each complaint factor moves satisfaction, per district, over time.

:mod:`.features` turns a satisfaction event and the customer's recent complaints into a
feature vector; :mod:`.regression` keeps an online linear regression per district and
network-wide. Both are pure and synchronous (no I/O); the stage that feeds them is wired later.
"""

from .features import DEFAULT_SPEC, Complaint, CustomerHistory, FeatureSpec, features
from .regression import NETWORK, FactorModel

__all__ = [
    "DEFAULT_SPEC",
    "NETWORK",
    "Complaint",
    "CustomerHistory",
    "FactorModel",
    "FeatureSpec",
    "features",
]
