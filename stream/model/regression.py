"""Online factor regression: satisfaction score on complaint factors, per district and network-wide.

Each district, and the network as a whole (:data:`NETWORK`), has a river
``linear_model.BayesianLinearRegression``: exact (conjugate) least squares updated batch by batch
with ``learn_many``, on the *raw* features plus a constant, so a coefficient is an effect in score
points per unit of its factor ("a network complaint in the horizon costs 1.0 point").

Forgetting: with ``memory`` set, river's ``smoothing`` is ``1 - 1/memory``, so the estimate is a
weighted least-squares fit in which an event ``k`` events old (of that model) weighs
``(1 - 1/memory) ** k``: a change of effect is half-way shown after ``~0.69 * memory`` events of
that model. With ``memory=None`` nothing is forgotten and the estimate is ordinary least squares
over every event (up to a weak prior of ``prior`` pseudo-events pulling each weight towards 0).

``stderr`` is the standard error of each coefficient of that weighted fit:
``sqrt(sigma^2 * (sum w^2 / sum w) * diag(posterior covariance))``, where ``sigma^2`` is the weighted
mean of squared prediction errors (each batch is predicted before it is learned); ``n_eff``
(``(sum w)^2 / sum w^2``) is the number of equally weighted events the fit is worth.

>>> import random
>>> m = FactorModel(["complaints_network", "tier_gold"], memory=None)
>>> rng = random.Random(1)
>>> for _ in range(4000):
...     x = {"complaints_network": float(rng.random() < 0.3), "tier_gold": float(rng.random() < 0.2)}
...     m.learn("D1", x, 8.0 - 1.2 * x["complaints_network"] + rng.gauss(0, 0.5))
>>> r = m.report("D1")
>>> r.n, round(r.coefficients["complaints_network"], 1), abs(r.coefficients["tier_gold"]) < 0.05
(4000, -1.2, True)
>>> 0.01 < r.stderr["complaints_network"] < 0.03, round(r.residual_sd, 1)
(True, 0.5)
>>> m.top_factors(NETWORK, 1)[0][0]
'complaints_network'
>>> FactorModel.from_bytes(m.to_bytes()).coefficients("D1") == m.coefficients("D1")
True
"""

from __future__ import annotations

import math
import pickle
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from river import linear_model

#: key of the network-wide model
NETWORK = "*"
#: name of the constant column (its weight is the intercept: the score with every factor at 0)
INTERCEPT = "intercept"


@dataclass(frozen=True)
class FactorReport:
    """The published state of one model."""

    district: str
    n: int  # satisfaction events learned
    n_eff: float  # equally weighted events the (forgetting) fit is worth
    intercept: float
    coefficients: dict[str, float]  # factor -> effect on the score, points per unit
    stderr: dict[str, float]  # factor -> standard error of the coefficient, points
    residual_sd: float  # typical prediction error of the score, points


@dataclass
class _Tracked:
    model: linear_model.BayesianLinearRegression
    n: int = 0
    w: float = 0.0  # sum of the current weights of the events learned
    w2: float = 0.0  # sum of their squares
    sse: float = 0.0  # weighted sum of squared prediction errors (of events predicted before being learned)
    wp: float = 0.0  # sum of the current weights of those events


class FactorModel:
    """Online regression of the overall score on ``factors``, one model per district plus :data:`NETWORK`."""

    def __init__(self, factors: Sequence[str], memory: int | None = 20_000, prior: float = 1.0) -> None:
        if memory is not None and memory < 2:
            raise ValueError("memory must be >= 2 events (or None: no forgetting)")
        self.factors = tuple(factors)
        self.columns = (INTERCEPT, *self.factors)
        self.memory = memory
        self.smoothing = None if memory is None else 1.0 - 1.0 / memory
        # The prior is worth `prior` events of unit-valued factors; river scales data by
        # (1 - smoothing) when smoothing, so the prior precision is scaled alike.
        self.alpha = 1.0 / (prior * (1.0 if memory is None else 1.0 / memory))
        self._models: dict[str, _Tracked] = {}

    def _new(self) -> _Tracked:
        return _Tracked(linear_model.BayesianLinearRegression(alpha=self.alpha, beta=1.0, smoothing=self.smoothing))

    def districts(self) -> list[str]:
        return sorted(self._models)

    def learn(self, district: str, x: dict[str, float], y: float) -> None:
        """Learn one satisfaction event (``x``: factor -> value; missing factors are 0)."""
        row = np.array([[x.get(f, 0.0) for f in self.factors]], dtype=np.float64)
        self.learn_many([district], row, np.array([y], dtype=np.float64))

    def learn_many(self, districts: Sequence[str], X: np.ndarray, y: np.ndarray) -> list[str]:
        """Learn rows in order: row ``i`` (columns in ``factors`` order) scored ``y[i]`` in ``districts[i]``.

        Every row goes to its district's model and to the network-wide one. Returns the models changed.
        """
        if len(districts) == 0:
            return []
        rows: dict[str, list[int]] = defaultdict(list)
        for i, d in enumerate(districts):
            rows[d].append(i)
        design = np.hstack([np.ones((len(X), 1)), np.asarray(X, dtype=np.float64)])
        y = np.asarray(y, dtype=np.float64)
        groups = [(d, np.asarray(ix)) for d, ix in rows.items() if d != NETWORK]
        groups.append((NETWORK, np.arange(len(design))))
        for d, ix in groups:
            t = self._models.get(d)
            if t is None:
                t = self._models[d] = self._new()
            # With forgetting, a block of k rows decays the prior precision by s**k: a block longer than
            # the memory would take the invertibility floor below rounding (a singular matrix when factors
            # are collinear, e.g. every event alike). Blocks of one memory each are exactly the same fit.
            step = len(ix) if self.smoothing is None else max(1, round(1 / (1 - self.smoothing)))
            for lo in range(0, len(ix), step):
                self._learn(t, design[ix[lo : lo + step]], y[ix[lo : lo + step]])
        return [d for d, _ in groups]

    def _learn(self, t: _Tracked, design: np.ndarray, y: np.ndarray) -> None:
        frame = pd.DataFrame(design, columns=self.columns, copy=False)
        k = len(y)
        s = self.smoothing
        ages = np.arange(k - 1, -1, -1)
        weights = np.ones(k) if s is None else (1 - s) * s**ages
        decay = 1.0 if s is None else s**k
        if t.n:  # prequential error: predict the batch with what was known before it
            err = y - np.asarray(t.model.predict_many(frame), dtype=np.float64)
            t.sse = decay * t.sse + float(weights @ (err * err))
            t.wp = decay * t.wp + float(weights.sum())
        self._keep_invertible(t.model, k)
        t.model.learn_many(frame, pd.Series(y, copy=False))
        t.n += k
        t.w = decay * t.w + float(weights.sum())
        t.w2 = decay * decay * t.w2 + float(weights @ weights)

    def _keep_invertible(self, model: linear_model.BayesianLinearRegression, rows: int) -> None:
        # With forgetting, the prior's precision decays geometrically in every direction the data do
        # not span (a factor that stopped occurring, or factors that always move together, e.g. every
        # event alike) and the matrix would become singular. Keep a tiny ridge in every direction: top
        # it up by what the next `rows` rows will decay, and floor the diagonal.
        ss = model._ss_arr  # noqa: SLF001 (river keeps the posterior precision here)
        n = len(model._idx)  # noqa: SLF001
        if n:
            diag = np.arange(n)
            floor = 1e-9  # data precision is O(1) (forgetting weights sum to ~1): far above rounding, no bias to speak of
            if self.smoothing is not None:
                ss[diag, diag] += floor * (1 - self.smoothing**rows)
            low = ss[diag, diag] < floor
            if low.any():
                ss[diag[low], diag[low]] = floor

    def report(self, district: str) -> FactorReport:
        t = self._models.get(district)
        if t is None or t.n == 0:
            return FactorReport(district, 0, 0.0, 0.0, {}, {}, 0.0)
        m = t.model
        eye = pd.DataFrame(np.eye(len(self.columns)), columns=self.columns)
        weights = dict(zip(self.columns, np.asarray(m.predict_many(eye), dtype=np.float64).tolist(), strict=True))
        sigma2 = t.sse / t.wp if t.wp > 0 else 0.0
        ratio = t.w2 / t.w if t.w > 0 else 1.0
        stderr: dict[str, float] = {}
        for f in self.factors:
            # posterior variance of weight f: predictive variance at the unit vector minus the noise (1/beta)
            var = float(m.predict_one({f: 1.0}, with_dist=True).sigma ** 2) - 1.0
            stderr[f] = math.sqrt(max(sigma2 * ratio * var, 0.0))
        coef = {f: weights[f] for f in self.factors}
        n_eff = t.w * t.w / t.w2 if t.w2 > 0 else 0.0
        return FactorReport(district, t.n, n_eff, weights[INTERCEPT], coef, stderr, math.sqrt(sigma2))

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
