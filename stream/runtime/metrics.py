"""Prometheus metrics, served on the worker's web port at ``/metrics``.

One module so every metric name is in one place (dashboards and alerts refer
to them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "cxstream_events_total",
    "Records consumed from source topics, by stream and outcome (ingested, rejected, duplicate).",
    ["stream", "outcome"],
)
REJECTS = Counter(
    "cxstream_rejects_total", "Records sent to the dead-letter path, by stream and reason.", ["stream", "reason"]
)
BATCH_SIZE = Histogram(
    "cxstream_batch_records",
    "Records per polled ingest batch.",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000),
)
BATCH_SECONDS = Histogram(
    "cxstream_batch_seconds",
    "Time to validate, store and commit one ingest batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STAGE_SECONDS = Histogram(
    "cxstream_stage_seconds",
    "Time of one stage of an ingest batch, observed when it succeeds: validate (decode, dedup), derive "
    "(lifecycle, indicators, model, alerts; reads ClickHouse for tickets not in memory), store_raw (events, dead "
    "letters), store_derived (state, cells, model, alerts), publish (sent and acknowledged), commit. validate "
    "and derive are Python work under the GIL; the stores are mostly ClickHouse's own work.",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STAGES = ("validate", "derive", "store_raw", "store_derived", "publish", "commit")
#: the labelled children, bound once (a batch observes each)
STAGE = {name: STAGE_SECONDS.labels(name) for name in STAGES}


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a batch's stage; a stage that raises (a retry, a stop) is not observed."""
    started = time.perf_counter()
    yield
    STAGE[name].observe(time.perf_counter() - started)


SINK_SECONDS = Histogram(
    "cxstream_sink_insert_seconds",
    "ClickHouse insert latency per table.",
    ["table"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SINK_RETRIES = Counter("cxstream_sink_retries_total", "ClickHouse insert retries, by table.", ["table"])
SINK_FAILURES = Counter(
    "cxstream_sink_failures_total", "Batches whose storage failed after all retries (the batch is retried).", []
)
CONSUMER_LAG = Gauge("cxstream_consumer_lag", "Records behind the end of each source partition.", ["topic", "partition"])
SEEN_IDS = Gauge("cxstream_dedup_seen_ids", "Event ids held in the resend-deduplication set.")
STATE_TICKETS = Gauge("cxstream_state_tickets", "Tickets held in stream state (open and recently closed).")
HANDOVER_SECONDS = Histogram(
    "cxstream_rebalance_drain_seconds",
    "Time a worker losing partitions took to commit its batches in flight before releasing them.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HANDOVER_LATE = Counter(
    "cxstream_rebalance_drain_timeouts_total",
    "Revocations whose batches in flight were not committed within the rebalance timeout (may be counted twice).",
)
RESTORE_SECONDS = Histogram(
    "cxstream_restore_seconds",
    "Time to restore an assignment's state (tickets, contributions, histories, models) from ClickHouse.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
RESTORE_FAILURES = Counter(
    "cxstream_restore_failures_total", "Restores that failed (retried with backoff; no batch is taken meanwhile)."
)
SLA_OVERDUE = Counter("cxstream_sla_overdue_total", "Open tickets found past their SLA deadline with no closing event.")
INDICATOR_TOO_LATE = Counter(
    "cxstream_indicator_too_late_total", "Indicator facts for windows already final (not applied; kept in indicator_too_late)."
)
MODEL_LEARNED = Counter("cxstream_model_learned_total", "Satisfaction events learned by the factor model.")
MODEL_CUSTOMERS = Gauge("cxstream_model_customers", "Customers with recent complaints held for the factor model.")
MODEL_PUBLISHED = Counter("cxstream_model_publications_total", "Factor-model publications (coefficients, exposures, snapshot).")
ALERT_TRANSITIONS = Counter("cxstream_alert_transitions_total", "Alert status changes, by rule and status.", ["rule", "status"])
ALERT_STATE_CELLS = Gauge("cxstream_alert_state_cells", "Indicator cells held by the alert engine (all writers' partials).")
ALERTS_ACTIVE = Gauge("cxstream_alerts", "Current alerts by state (pending, firing, predicted).", ["state"])
ALERT_DELIVERIES = Counter(
    "cxstream_alert_deliveries_total", "Alert deliveries by target (alertmanager, webhook) and outcome.", ["target", "outcome"]
)
ALERT_DELIVERY_FAILURES = Counter(
    "cxstream_alert_delivery_failures_total", "Delivery attempts that failed (each is retried with backoff).", ["target"]
)
ALERT_DELIVERY_QUEUE = Gauge("cxstream_alert_delivery_queue", "Alerts waiting for delivery, by target.", ["target"])
SUPERVISION_EVENTS = Counter("cxstream_supervision_events_total", "Supervision ticket changes, by action.", ["action"])
SUPERVISION_ACK_SECONDS = Histogram(
    "cxstream_supervision_ack_seconds", "Time from opening a supervision ticket to its acknowledgement.",
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
)
SUPERVISION_CLOSE_SECONDS = Histogram(
    "cxstream_supervision_close_seconds", "Time from opening a supervision ticket to closing it.",
    buckets=(300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200),
)
SUPERVISION_CLOSED_WHILE_BAD = Counter(
    "cxstream_supervision_closed_while_bad_total", "Supervision tickets closed while their alert was still firing."
)


MESSAGES_OUT = Counter("cxstream_messages_out_total", "Messages published, by topic.", ["topic"])
EVENT_TO_COMMIT_SECONDS = Histogram(
    "cxstream_event_to_commit_seconds",
    "From the earliest Kafka timestamp of a batch to its commit (indicators, model and alerts stored and published).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def count_alerts(docs: list[dict], cells: int, states: dict[str, int]) -> None:
    for d in docs:
        ALERT_TRANSITIONS.labels(d["rule"], d["status"]).inc()
    ALERT_STATE_CELLS.set(cells)
    for state in ("pending", "firing", "predicted"):
        ALERTS_ACTIVE.labels(state).set(states.get(state, 0))
