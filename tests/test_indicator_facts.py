"""The batch (columnar) form of satisfaction facts equals the per-event definition."""

from __future__ import annotations

import numpy as np

from stream.contract import SatisfactionEvent
from stream.indicators.counters import WIDTH, add_sparse, zeros
from stream.indicators.facts import satisfaction_columns, satisfaction_facts
from stream.simulate import generate

from .conftest import SIM_START


def test_satisfaction_columns_equal_satisfaction_facts():
    sim = generate(3000, seed=4, start=SIM_START)
    events = [SatisfactionEvent.model_validate_json(r.value) for r in sim.records
              if r.stream == "satisfaction_events" and r.kind == "valid"]  # fmt: skip
    assert len(events) > 500
    times, cells, counters, ids = satisfaction_columns(events, 8)
    assert counters.shape == (len(events), WIDTH)
    for i, e in enumerate(events):
        [(t, cell, sparse)] = satisfaction_facts(e, 8)
        assert (times[i], cells[i], ids[i]) == (t, cell, e.event_id)
        assert np.array_equal(counters[i], np.array(add_sparse(zeros(), sparse))), e.event_id
