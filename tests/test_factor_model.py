"""The online factor model recovers the simulator's planted score model (issue 5, groundwork).

One simulation of EVENTS records (one day, no defects or resends) is replayed in event-time order:
every ticket event re-folds its ticket (as the lifecycle stage would) into a :class:`CustomerHistory`,
every satisfaction event becomes a feature vector that the :class:`FactorModel` learns online.
The same rows are solved by batch least squares for comparison.
"""

from __future__ import annotations

import pickle
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from stream.contract import SatisfactionEvent, TicketEvent
from stream.model import NETWORK, CustomerHistory, FactorModel, FeatureSpec, features
from stream.simulate import generate
from stream.simulate import world as W
from stream.simulate.plants import CLOSURE_EFFECTS, REOPEN_EFFECT, SLA_BREACH_EFFECT
from stream.state.lifecycle import Step, fold

START = datetime(2026, 11, 20, tzinfo=timezone(timedelta(hours=8)))
EVENTS = 150_000  # records generated: ~54k satisfaction events learned (~10 s in all)
SEED = 7
#: online (averaged SGD) vs numpy.linalg.lstsq over the same rows, in score points
TOL_CATEGORY = 0.05  # complaint-category coefficients
TOL_ANY = 0.15  # every coefficient (rare linked-ticket factors included)
PLAN_LEVELS = tuple(sorted({p for ps in W.PLANS.values() for p in ps}))
SPEC = FeatureSpec(plans=PLAN_LEVELS, plan_baseline=PLAN_LEVELS[0])


def _in_event_time_order(sim) -> list:
    """The simulated events decoded, in event-time order; at a tie the ticket step first (the simulator scores with ct <= t)."""
    events = [
        TicketEvent.model_validate_json(r.value)
        if r.stream == "ticket_events"
        else SatisfactionEvent.model_validate_json(r.value)
        for r in sim.records
    ]
    events.sort(key=lambda e: (e.event_time, isinstance(e, SatisfactionEvent)))
    return events


@pytest.fixture(scope="module")
def replay():
    sim = generate(EVENTS, seed=SEED, start=START, malformed_share=0.0, resend_share=0.0)
    events = _in_event_time_order(sim)
    history = CustomerHistory(horizon=timedelta(days=30))
    steps: dict[str, list[Step]] = defaultdict(list)
    model = FactorModel()
    rows, ys, districts = [], [], []
    for e in events:
        if isinstance(e, TicketEvent):
            steps[e.ticket_id].append(Step.from_event(e))
            history.update(fold(e.ticket_id, steps[e.ticket_id]))
        else:
            x = features(e, history, spec=SPEC)
            model.learn(e.region.district, x, float(e.overall_score))
            rows.append(list(x.values()))
            ys.append(float(e.overall_score))
            districts.append(e.region.district)
    X = np.hstack([np.ones((len(rows), 1)), np.array(rows)])
    beta, *_ = np.linalg.lstsq(X, np.array(ys), rcond=None)
    lstsq = dict(zip(("intercept", *SPEC.names()), beta))
    return sim, model, lstsq, np.array(districts), X, np.array(ys)


def _planted(sim) -> dict[str, float]:
    p = sim.plants.describe()
    out = {f"complaints_{c}": v for c, v in p["category_effects"].items()}
    out |= {f"closure_{c}": v for c, v in CLOSURE_EFFECTS.items() if c != "resolved"}
    return out | {"sla_breach": SLA_BREACH_EFFECT, "reopen": REOPEN_EFFECT}


def test_categories_have_planted_signs_and_sizes(replay):
    sim, model, *_ = replay
    r = model.report(NETWORK)
    assert r.n > 50_000
    coef = r.coefficients
    for name, planted in _planted(sim).items():
        assert np.sign(coef[name]) == np.sign(planted), (name, coef[name], planted)
        if name.startswith("complaints_"):
            # network-wide; installation also carries the planted district's extra effect pooled in (~ +15 %)
            assert abs(coef[name] - planted) <= 0.2 * abs(planted), (name, coef[name], planted)


def test_agrees_with_batch_least_squares(replay):
    _, model, lstsq, *_ = replay
    coef = model.coefficients(NETWORK)
    assert set(coef) == set(SPEC.names())
    dev = {k: abs(v - lstsq[k]) for k, v in coef.items()}
    assert max(v for k, v in dev.items() if k.startswith("complaints_")) <= TOL_CATEGORY, dev
    assert max(dev.values()) <= TOL_ANY, dev
    assert abs(model.report(NETWORK).intercept - lstsq["intercept"]) <= TOL_ANY


def test_planted_district_shows_its_extra_installation_effect(replay):
    sim, model, _, districts, X, y = replay
    d = sim.plants.install_district
    mine = districts == d
    batch = dict(zip(("intercept", *SPEC.names()), np.linalg.lstsq(X[mine], y[mine], rcond=None)[0]))
    local = model.coefficients(d)["complaints_installation"]
    network = model.coefficients(NETWORK)["complaints_installation"]
    # planted: -0.8 network-wide, a further -2.0 in this district
    assert local < network - 1.0, (local, network, batch["complaints_installation"])
    assert model.top_factors(d, 1)[0][0] == "complaints_installation"


def test_snapshot_restores_and_continues_identically(replay):
    _, model, *_ = replay
    copy = FactorModel.from_bytes(model.to_bytes())
    assert copy.coefficients(NETWORK) == model.coefficients(NETWORK)
    x = dict.fromkeys(SPEC.names(), 0.0) | {"complaints_network": 1.0}
    a, b = pickle.loads(pickle.dumps(copy)), FactorModel.from_bytes(copy.to_bytes())
    for m in (a, b):
        m.learn("D-new", x, 3.0)
    assert a.report("D-new") == b.report("D-new") and a.report("D-new").n == 1


def test_history_expires_and_is_bounded():
    h = lambda n: datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=n)
    hist = CustomerHistory(horizon=timedelta(days=30), max_customers=2)
    for i, cust in enumerate(("a", "b", "c")):
        hist.update(fold(f"T{i}", [Step(f"e{i}", h(i), "created", "CRM", cust, complaint_category="network",
                                        sla_deadline=h(i + 1))]))  # fmt: skip
    assert len(hist) == 2 and hist.evicted == 1 and hist.complaints("a", h(5)) == []  # stalest evicted
    assert [c.ticket_id for c in hist.complaints("b", h(5))] == ["T1"]
    assert hist.complaints("b", h(40)) == []  # beyond the horizon before the event
    assert hist.expire(h(31.5)) == 1 and len(hist) == 1  # T1 created day 1, T2 day 2
    restored = CustomerHistory.from_bytes(hist.to_bytes())
    assert [c.ticket_id for c in restored.complaints("c", h(3))] == ["T2"]


@pytest.mark.parametrize(("window", "within"), [(20_000, 20_000), (5_000, 5_000)])
def test_changed_effect_shows_within_stated_events(window, within):
    """Synthetic stream: a network complaint costs 1.0 point for 30k events, then 2.0 points.
    The published coefficient passes the midpoint (-1.5) within ``within`` events (measured:
    ~15k with the default window of 20k, ~3.6k with 5k)."""
    rng = random.Random(3)
    model = FactorModel(average_window=window)

    def learn(effect: float) -> float:
        x = {"complaints_network": float(rng.random() < 0.15), "complaints_billing": float(rng.random() < 0.1)}
        y = 8.3 + effect * x["complaints_network"] - 0.5 * x["complaints_billing"] + rng.gauss(0, 1)
        model.learn("D", x, y)
        return model.coefficients(NETWORK)["complaints_network"]

    for _ in range(30_000):
        before = learn(-1.0)
    assert abs(before + 1.0) < 0.1
    shown = next((i for i in range(1, within + 1) if learn(-2.0) < -1.5), None)
    assert shown is not None, f"no sign of the change within {within} events"


def test_planted_change_of_effect_shows_within_stated_events():
    """Simulator plant: a network complaint costs 1.0 point until local noon, 2.0 points from then on.

    Replayed in event-time order (as ``replay``), the network-wide ``complaints_network`` coefficient
    is near -1.0 at the change (measured -0.92 after ~17.7k satisfaction events) and passes the midpoint
    -1.5 within SHOWN_WITHIN satisfaction events after it (measured: 15,992 of ~36.5k after the change,
    with the default average_window of 20k; ~0.75 * average_window as regression.py states).
    """
    from stream.simulate import World, default_plants
    from stream.simulate.plants import EffectChange

    shown_within = 20_000  # measured 15,992; margin ~25 %
    world = World.build(SEED)
    at = START + timedelta(hours=12)
    plants = default_plants(world, START, effect_change=EffectChange("network", at, -2.0))
    sim = generate(EVENTS, seed=SEED, start=START, malformed_share=0.0, resend_share=0.0, world=world, plants=plants)
    assert sim.plants.describe()["effect_change"]["previous_effect"] == -1.0
    events = _in_event_time_order(sim)
    history = CustomerHistory(horizon=timedelta(days=30))
    steps: dict[str, list[Step]] = defaultdict(list)
    model = FactorModel()
    before, after, shown = None, 0, None
    for e in events:
        if isinstance(e, TicketEvent):
            steps[e.ticket_id].append(Step.from_event(e))
            history.update(fold(e.ticket_id, steps[e.ticket_id]))
            continue
        if before is None and e.event_time >= at:
            before = model.coefficients(NETWORK)["complaints_network"]
        model.learn(e.region.district, features(e, history, spec=SPEC), float(e.overall_score))
        if before is not None:
            after += 1
            if model.coefficients(NETWORK)["complaints_network"] < -1.5:
                shown = after
                break
    assert before is not None and abs(before + 1.0) <= 0.2, before
    assert shown is not None and shown <= shown_within, (shown, after)
