"""The alert engine on synthetic window values: firing, hysteresis, change baselines, trend warnings, identity."""

from __future__ import annotations

import numpy as np
import pytest

from stream.alerts.engine import AlertEngine, CellUpdate, fingerprint
from stream.indicators.counters import INDEX, WIDTH
from stream.topology import AlertRule, WindowSpec

H = 3600
WINDOWS = {"1h": WindowSpec(name="1h", kind="tumbling", size="1h")}


def rule(**kw) -> AlertRule:
    base = {"name": "r", "indicator": "sat_mean", "scope": "district", "window": "1h", "comparator": "<",
            "threshold": 7.0, "severity": "warning"}  # fmt: skip
    return AlertRule.model_validate(base | kw)


def sat(hour: int, n: float, mean: float, district="D1", writer=1, channel="hotline") -> CellUpdate:
    row = np.zeros(WIDTH)
    row[INDEX["sat_n"]], row[INDEX["sat_sum"]] = n, n * mean
    return CellUpdate("1h", hour * H, (hour + 1) * H, "P1", "C1", district, channel, "", writer, row)


def complaints(hour: int, n: float, district="D1") -> CellUpdate:
    row = np.zeros(WIDTH)
    row[INDEX["complaints"]] = n
    return CellUpdate("1h", hour * H, (hour + 1) * H, "P1", "C1", district, "hotline", "", 1, row)


def run(engine: AlertEngine, updates) -> list[tuple[int, str]]:
    out = []
    for u in updates:
        out += [(u.start // H, t.status) for t in engine.apply([u])]
    return out


def test_fires_within_the_window_the_incident_starts_and_resolves_after_it_ends():
    engine = AlertEngine([rule(min_volume=20, keep_firing_for=2)], WINDOWS)
    updates = [sat(h, 50, 8.0) for h in range(5)]
    # hour 5: the incident starts; its first 20 responses already breach
    updates += [sat(5, 10, 6.0), sat(5, 25, 6.1), sat(5, 60, 6.0), sat(6, 40, 6.2)]
    updates += [sat(h, 50, 8.0) for h in (7, 8)] + [sat(9, 5, 8.0)]
    transitions = run(engine, updates)
    assert transitions == [(5, "firing"), (9, "resolved")]  # resolved once hours 7 and 8 are complete and clear
    [fired] = [t for t in engine.alerts(("resolved",))]
    assert fired.since == 5 * H


def test_quiet_day_fires_nothing():
    rng = np.random.default_rng(1)
    engine = AlertEngine([rule(min_volume=20, **{"for": 2})], WINDOWS)
    updates = [sat(h, 40, float(rng.normal(8.0, 0.25)), district=d) for h in range(24) for d in ("D1", "D2", "D3")]
    assert run(engine, updates) == []


def test_hovering_at_the_threshold_does_not_flap():
    """Firing at 6.8, then the hourly mean hovers at 7.0 +- 0.05: with hysteresis 0.2 it stays firing."""
    engine = AlertEngine([rule(min_volume=20, hysteresis=0.2, keep_firing_for=2)], WINDOWS)
    values = [8.0, 8.0, 6.8, 6.8] + [7.05, 6.95] * 6 + [7.4, 7.5, 7.5]
    transitions = run(engine, [sat(h, 40, v) for h, v in enumerate(values)])
    assert transitions == [(2, "firing"), (18, "resolved")]


def test_without_hysteresis_a_hovering_indicator_would_resolve_and_fire_again():
    """The control for the test above: the same values with no hysteresis and keep_firing_for 1 do flap."""
    engine = AlertEngine([rule(min_volume=20)], WINDOWS)
    values = [8.0, 8.0, 6.8, 6.8] + [7.05, 6.95] * 3
    statuses = [s for _, s in run(engine, [sat(h, 40, v) for h, v in enumerate(values)])]
    assert statuses.count("firing") > 1 and statuses.count("resolved") >= 1


def test_for_needs_consecutive_breaching_windows_and_a_blip_is_only_pending():
    engine = AlertEngine([rule(min_volume=20, **{"for": 3})], WINDOWS)
    values = [8, 6.5, 8, 6.5, 6.5, 8, 6.5, 6.4, 6.3]
    assert run(engine, [sat(h, 40, v) for h, v in enumerate(values)]) == [
        (1, "pending"), (3, "inactive"), (3, "pending"), (6, "inactive"), (6, "pending"), (8, "firing")
    ]  # fmt: skip  # a blip goes inactive once its clear successor window is complete


def test_low_volume_windows_are_not_judged():
    engine = AlertEngine([rule(min_volume=30)], WINDOWS)
    assert run(engine, [sat(0, 5, 2.0), sat(1, 29, 3.0)]) == []


def test_partials_of_several_writers_add_up_and_a_newer_version_replaces_the_older():
    """Two workers' partials: neither alone reaches min_volume; together they breach. A writer's second
    message for the same cell replaces its first (it is cumulative), it is not added."""
    engine = AlertEngine([rule(min_volume=30)], WINDOWS)
    assert run(engine, [sat(0, 20, 6.0, writer=1)]) == []
    assert run(engine, [sat(0, 20, 6.0, writer=2)]) == [(0, "firing")]
    engine.apply([sat(0, 20, 6.0, writer=2)])  # redelivered: no change
    [alert] = engine.alerts()
    assert alert.volume == 40 and alert.value == pytest.approx(6.0)


def test_scope_city_by_channel_aggregates_districts_per_channel():
    engine = AlertEngine([rule(scope="city", by=["channel"], min_volume=30)], WINDOWS)
    run(engine, [sat(0, 20, 6.0, district="D1", channel="app_web"), sat(0, 20, 6.0, district="D2", channel="app_web"),
                 sat(0, 20, 6.0, district="D1", channel="hotline")])  # fmt: skip
    [alert] = engine.alerts()
    assert alert.labels == {"province": "P1", "city": "C1", "channel": "app_web"} and alert.volume == 40


def test_percent_change_against_the_own_baseline():
    r = rule(indicator="complaints", comparator=">=", threshold=100, change={"kind": "percent", "baseline_windows": 6})
    engine = AlertEngine([r], WINDOWS)
    counts = [10, 12, 11, 9, 10, 12, 11, 30]
    transitions = [t for h, c in enumerate(counts) for t in engine.apply([complaints(h, c)])]
    assert [(t.window_start // H, t.status) for t in transitions] == [(7, "firing")]
    assert transitions[0].baseline == pytest.approx(np.mean(counts[1:7])) and transitions[0].value == 30


def test_zscore_against_the_same_hour_of_week():
    """Three weeks of the same daily pattern (high at noon); in week 4, noon is normal and 3 a.m. is high."""
    r = rule(indicator="complaints", comparator=">=", threshold=4, change={"kind": "zscore", "min_weeks": 3})
    r = r.model_copy(update={"threshold": 8.0})
    engine = AlertEngine([r], WINDOWS)
    rng = np.random.default_rng(2)
    updates = []
    for week in range(4):
        for hour in range(0, 168):
            t = week * 168 + hour
            base = 40 if hour % 24 == 12 else 5
            n = base + rng.integers(-2, 3)
            if week == 3 and hour == 27:  # Friday 3 a.m. of week 4 (epoch weeks start on Thursday)
                n = 40
            updates.append(complaints(t, float(n)))
    fired = [(h % 168, s) for h, s in run(engine, updates) if s == "firing"]
    assert fired == [(27, "firing")]


def test_upward_trend_warns_before_the_breach():
    """Complaints per hour rise steadily towards the threshold: the forecast warns before the count crosses it."""
    r = rule(indicator="complaints", comparator=">=", threshold=60, forecast={"horizon": 3, "min_windows": 4})
    engine = AlertEngine([r], WINDOWS)
    counts = [10, 10, 11, 10, 12, 18, 24, 30, 36, 42, 48, 54, 61, 66]
    transitions = run(engine, [complaints(h, c) for h, c in enumerate(counts)])
    predicted = [h for h, s in transitions if s == "predicted"]
    fired = [h for h, s in transitions if s == "firing"]
    assert predicted and fired and predicted[0] < fired[0], transitions
    assert fired[0] == 12


def test_a_restored_status_is_not_announced_again():
    r = rule(min_volume=20)
    engine = AlertEngine([r], WINDOWS)
    labels = {"province": "P1", "city": "C1", "district": "D1"}
    engine.restore_status("r", labels, "firing", 0)
    assert run(engine, [sat(0, 40, 6.0), sat(1, 40, 6.0)]) == []  # still firing: nothing new
    assert run(engine, [sat(2, 40, 8.0), sat(3, 1, 8.0)]) == [(3, "resolved")]
    assert engine.alerts(("resolved",))[0].fingerprint == fingerprint("r", labels)


def test_fingerprint_is_stable_and_scope_specific():
    a = fingerprint("r", {"province": "P1", "city": "C1", "district": "D1"})
    assert a == fingerprint("r", {"district": "D1", "city": "C1", "province": "P1"})
    assert a != fingerprint("r", {"province": "P1", "city": "C1", "district": "D2"}) and len(a) == 16
