"""Online factor regression: satisfaction score on complaint factors, per district and network-wide.

Each district, and the network as a whole (:data:`NETWORK`), has a river
``linear_model.LinearRegression`` trained by plain SGD on the *raw* features (no standardisation,
so a coefficient is an effect in score points per unit of its feature: "a network complaint in the
horizon costs 1.0 point"). Features on a larger scale than 0/1 are divided by a fixed constant
(``scale``, 48 for ``last_handling_h``) before learning and the coefficient is scaled back, so
one learning rate suits all of them.

A constant-rate SGD iterate wanders around the least-squares solution (sd ~ sqrt(lr / 2) points
per coefficient); the published coefficients are therefore the *averaged* iterate (Polyak-Ruppert):
after ``warmup`` updates, the running mean of the iterates, then an exponentially weighted mean over
~``average_window`` updates so that a change of effect still shows (about ``0.75 * average_window``
updates of that model to move halfway to a new effect). ``stability`` is the exponentially weighted
standard deviation of each published coefficient over ~``stability_window`` updates (of the raw
iterate during warmup): small once the data pin the coefficient down.

Defaults (lr 0.1, warmup 3000, average_window 20000) are tuned on the simulator: ~54k satisfaction
events put every network-wide coefficient within 0.07 points of batch least squares
(tests/test_factor_model.py). Keep ``lr * |x|^2`` well below 2 (plain SGD diverges past it): with
0/1 factors and ``last_handling_h / 48`` a row's squared norm stays around 10.

>>> import random
>>> m = FactorModel(warmup=1000)
>>> rng = random.Random(1)
>>> for _ in range(4000):
...     x = {"complaints_network": float(rng.random() < 0.3), "tier_gold": float(rng.random() < 0.2)}
...     m.learn("D1", x, 8.0 - 1.2 * x["complaints_network"] + rng.gauss(0, 0.5))
>>> r = m.report("D1")
>>> r.n, round(r.coefficients["complaints_network"], 1), round(r.coefficients["tier_gold"], 1)
(4000, -1.2, 0.0)
>>> m.top_factors(NETWORK, 1)[0][0]
'complaints_network'
>>> FactorModel.from_bytes(m.to_bytes()).coefficients("D1") == m.coefficients("D1")
True
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field

from river import linear_model, optim

#: key of the network-wide model
NETWORK = "*"


@dataclass(frozen=True)
class FactorReport:
    """The published state of one model."""

    district: str
    n: int  # satisfaction events learned
    intercept: float
    coefficients: dict[str, float]  # factor -> effect on the score, points per unit
    stability: dict[str, float]  # factor -> EW std of the published coefficient over ~stability_window updates


@dataclass
class _Tracked:
    model: linear_model.LinearRegression
    n: int = 0
    avg: dict[str, float] = field(default_factory=dict)  # averaged weights, points per unit (+ "__intercept__")
    mean: dict[str, float] = field(default_factory=dict)  # EW mean of the published weights, for stability
    var: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)  # feature -> multiplier applied before learning


_INTERCEPT = "__intercept__"


class FactorModel:
    """Online regression of the overall score on factors, one model per district plus :data:`NETWORK`."""

    def __init__(
        self,
        lr: float = 0.1,
        intercept_lr: float = 0.05,
        scale: dict[str, float] | None = None,
        warmup: int = 3000,
        average_window: int = 20_000,
        stability_window: int = 2000,
    ) -> None:
        self.lr, self.intercept_lr = lr, intercept_lr
        #: fixed divisors of features not on a 0/1 scale (keeps lr * |x|^2 well below 2)
        self.scale = {"last_handling_h": 48.0} if scale is None else dict(scale)
        self.warmup, self.average_window, self.stability_window = warmup, average_window, stability_window
        self._models: dict[str, _Tracked] = {}

    def _new(self) -> _Tracked:
        return _Tracked(
            linear_model.LinearRegression(optimizer=optim.SGD(self.lr), intercept_lr=self.intercept_lr, l2=0.0)
        )

    def districts(self) -> list[str]:
        return sorted(self._models)

    def learn(self, district: str, x: dict[str, float], y: float) -> None:
        """Learn one satisfaction event in its district's model and in the network-wide one."""
        for key in (district, NETWORK) if district != NETWORK else (NETWORK,):
            t = self._models.get(key)
            if t is None:
                t = self._models[key] = self._new()
            sc = t.scale
            for k in x:
                if k not in sc:
                    sc[k] = 1.0 / self.scale.get(k, 1.0)
            t.model.learn_one({k: v * sc[k] for k, v in x.items()}, y)
            t.n += 1
            self._track(t)

    def _track(self, t: _Tracked) -> None:
        w = {k: v * t.scale.get(k, 1.0) for k, v in t.model.weights.items()}
        w[_INTERCEPT] = t.model.intercept
        if t.n > self.warmup:
            b = max(1.0 / (t.n - self.warmup), 1.0 / self.average_window)
            for k, v in w.items():
                old = t.avg.get(k, v)
                t.avg[k] = old + b * (v - old)
            w = t.avg
        # stability of what is published (the raw iterate during warmup, then the average)
        a = 1.0 / self.stability_window
        for k, v in w.items():
            m = t.mean.get(k, v)
            d = v - m
            t.mean[k] = m + a * d
            t.var[k] = (1 - a) * (t.var.get(k, 0.0) + a * d * d)

    def report(self, district: str) -> FactorReport:
        t = self._models.get(district)
        if t is None:
            return FactorReport(district, 0, 0.0, {}, {})
        if t.avg:
            w = t.avg
        else:
            w = {k: v * t.scale.get(k, 1.0) for k, v in t.model.weights.items()}
            w[_INTERCEPT] = t.model.intercept
        coef = {k: v for k, v in sorted(w.items()) if k != _INTERCEPT}
        stab = {k: math.sqrt(max(v, 0.0)) for k, v in sorted(t.var.items()) if k != _INTERCEPT}
        return FactorReport(district, t.n, w.get(_INTERCEPT, 0.0), coef, stab)

    def coefficients(self, district: str) -> dict[str, float]:
        """Factor -> effect on the score (points per unit of the factor); {} for an unknown district."""
        return self.report(district).coefficients

    def top_factors(self, district: str, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` factors with the most negative effects first: what lowers satisfaction most."""
        return sorted(self.coefficients(district).items(), key=lambda kv: (kv[1], kv[0]))[:n]

    def to_bytes(self) -> bytes:
        """Snapshot for restart persistence (pickle; load only snapshots you wrote)."""
        return pickle.dumps(self.__dict__, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> FactorModel:
        m = cls.__new__(cls)
        m.__dict__.update(pickle.loads(data))
        return m
