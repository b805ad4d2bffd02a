"""Faust baselines for ``cxstream bench pipeline``, each run as its own process.

- ``naive``: the textbook Faust design, one event at a time: ``@app.agent`` over the source topics,
  each event decoded and validated against its contract (the same strict pydantic models the
  pipeline uses), deduplicated by ``event_id``, and the customer's latest ticket step and
  satisfaction score written to a Faust ``Table`` (one changelog message per update).
- ``take``: the same agent reading ``stream.take(1000, within=0.2)`` batches of raw bytes and
  validating them, with no table: Faust's delivery cost with batching, no state.

Usage (by the benchmark): ``python -m stream.bench.faust_baseline MODE BOOTSTRAP TOPICS EXPECTED OUT``.
The process writes ``{"first": t0, "last": t1, "n": n}`` (wall-clock seconds) to OUT when it has seen
``EXPECTED`` events, and the benchmark stops it.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(mode: str, bootstrap: str, topics: str, expected: int, out: str) -> None:
    import faust
    from pydantic import ValidationError

    from ..contract import EVENT_CONTRACTS

    names = topics.split(",")
    contract_of = {names[0]: "ticket_event", names[1]: "satisfaction_event"}
    app = faust.App(
        f"cxstream-bench-{mode}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        broker_rebalance_timeout=2,
        broker_session_timeout=4,
        broker_heartbeat_interval=1,
        topic_replication_factor=1,
        topic_partitions=6,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(*names, value_serializer="raw", key_serializer="raw")
    seen = {"n": 0, "first": None}
    ids: set[str] = set()

    def decode(value: bytes, model):
        try:  # the pipeline's validation: strict, as the published JSON Schema
            return model.model_validate_json(value, strict=True)
        except (ValidationError, ValueError):
            return None

    def done(k: int = 1) -> None:
        seen["n"] += k
        if seen["first"] is None:
            seen["first"] = time.time()
        if seen["n"] >= expected and not seen.get("written"):
            seen["written"] = True
            tmp = out + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"first": seen["first"], "last": time.time(), "n": seen["n"]}, f)
            os.replace(tmp, out)  # whole, or not there yet

    if mode == "naive":
        customers = app.Table("bench-customers", default=dict, partitions=6)

        @app.agent(source)
        async def per_event(stream):
            async for event in stream.events():
                contract = contract_of[event.message.topic]
                e = decode(event.value, EVENT_CONTRACTS[contract])
                if e is not None and e.event_id not in ids:
                    ids.add(e.event_id)
                    state = dict(customers[e.customer_id])
                    if contract == "ticket_event":
                        state[e.ticket_id] = str(e.step)
                    else:
                        state["score"] = e.overall_score
                    customers[e.customer_id] = state  # one changelog message per update
                done()

    else:

        @app.agent(source)
        async def batched(stream):
            async for events in stream.take_events(1000, within=0.2):
                for event in events:
                    e = decode(event.value, EVENT_CONTRACTS[contract_of[event.message.topic]])
                    if e is not None:
                        ids.add(e.event_id)
                done(len(events))

    sys.argv = ["faust", "worker", "--loglevel", "warning"]
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
