"""The ingest agent: a Faust-hosted service that polls batches and runs the pipeline on them.

Why not ``@app.agent``: Faust delivers to agents one event at a time (measured
here ~10k events/s with ``stream.take()``), while this stage is batch-first by
design. The agent owns an aiokafka consumer in its own group, polls up to
``consumer.batch_max_events`` records with ``getmany``, and for each batch:

1. validates and deduplicates (pure, :mod:`stream.ingest.batch`);
2. in two threads at once: stores the accepted events, resends and dead
   letters in ClickHouse, and derives the lifecycle state of the tickets the
   batch touches (:mod:`stream.state.stage`) and the indicator cells it changes
   (:mod:`stream.indicators.stage`);
3. stores the derived rows, then publishes dead letters (original bytes, reason
   in headers) and indicator updates and waits for the broker's acks;
4. commits the batch's offsets.

Steps 3-4 of batch N run while steps 1-2 of batch N+1 do (two batches in
flight): N+1 is stored and committed only after N is committed, so commits
stay in order and nothing is committed before it is stored.

Between batches it checks silent open tickets against their SLA deadline.
Offsets are committed only after steps 2 and 3 succeed, so delivery is
at-least-once; a redelivered event is recognised (the seen-set is warmed from
ClickHouse at start) and ClickHouse's ReplacingMergeTree is the backstop. A
storage failure never kills the worker: the batch is retried with backoff, its
derived rows exactly as first derived, until it is stored.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    RebalanceInProgressError,
)
from mode import Service

from ..alerts.stage import AlertOutput, AlertStage
from ..alerts.supervision import SupervisionError
from ..indicators.stage import (
    IndicatorStage,
    cells_table,
    too_late_table,
    update_messages,
)
from ..model.stage import ModelOutput, ModelStage
from ..runtime import metrics
from ..runtime.memory import give_back
from ..sink.clickhouse import Writer
from ..sink.columns import (
    TABLES,
    dead_letter_table,
    duplicate_table,
    ticket_state_table,
    ticket_steps_table,
    utcnow,
)
from ..state.stage import TicketStage
from ..topology import Topology
from .batch import BatchSplitter
from .dedup import SeenIds
from .records import Accepted, IngestBatch, RawRecord, Rejection, Tally

log = logging.getLogger("cxstream.ingest")


def retry_delay(attempt: int) -> float:
    """Backoff before retry ``attempt`` (1, 2, ...) of a batch or a restore: 1 s doubling, at most 30 s."""
    return min(30.0, 0.5 * 2**attempt)


def dead_letter_headers(r: Rejection) -> list[tuple[str, bytes]]:
    """Kafka headers describing why a record was dead-lettered (the value stays the original bytes)."""
    return [
        ("cx.reason", r.reason.encode()),
        ("cx.field", r.field.encode()),
        ("cx.detail", r.detail.encode()[:4000]),
        ("cx.source.topic", r.record.topic.encode()),
        ("cx.source.partition", str(r.record.partition).encode()),
        ("cx.source.offset", str(r.record.offset).encode()),
        ("cx.source.system", r.source_system.encode()),
    ]


class _Stopping(RuntimeError):
    """The agent is stopping: the work is not stored (nor committed); the next owner redoes it."""


@dataclass
class _Derived:
    """What a batch (or an SLA check) derived in memory; stored, and retried, exactly as is."""

    #: the rows to store, (table, Arrow table) in order: built where they are derived, so the stage that
    #: stores, publishes and commits (the pipeline's slower half at a steady rate) only inserts them
    tables: list[tuple[str, pa.Table]]
    tickets: list[str]  # whose states these rows hold (kept in memory until stored); not the states themselves
    late: int  # events too late for their window
    messages: list[tuple[bytes, bytes]]
    model: ModelOutput | None = None  # a factor-model publication, when one was due
    alerts: AlertOutput | None = None  # alert transitions and the supervision tickets they open


def _model_tables(out: ModelOutput) -> list[tuple[str, pa.Table]]:
    """A factor-model publication's rows; the snapshot last: it vouches for what came before."""
    tables = [("factor_coefficients", out.coefficients)] if len(out.coefficients) else []
    if len(out.exposure):
        tables.append(("factor_exposure", out.exposure))
    return [*tables, ("factor_model_snapshots", out.snapshot)]


@dataclass
class _Batch:
    """A polled batch, validated, its raw events stored and its state derived: waiting to be completed."""

    offsets: dict  # topic partition -> the offset to commit
    arrival_ms: int  # the earliest Kafka timestamp of the batch
    tallies: dict[str, Tally]
    derived: _Derived
    records: int
    started: float


class Progress:
    """Running totals, printed periodically the way people expect of a long job."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = defaultdict(int)
        self._last_total = 0
        self._last_time = time.monotonic()
        self.lag = 0

    def add(self, batches: dict[str, Tally]) -> None:
        for b in batches.values():
            self.totals["ingested"] += b.accepted
            self.totals["rejected"] += len(b.rejected)
            self.totals["duplicate"] += b.duplicates

    def line(self) -> str:
        now = time.monotonic()
        done = sum(self.totals.values())
        rate = (done - self._last_total) / max(now - self._last_time, 1e-9)
        self._last_total, self._last_time = done, now
        t = self.totals
        return (
            f"ingest: {rate:,.0f} events/s | lag {self.lag:,} | stored {t['ingested']:,} "
            f"| rejected {t['rejected']:,} | duplicates {t['duplicate']:,}"
        )


class IngestAgent(Service):
    """Consume source topics in batches; store, dead-letter, then commit."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topology: Topology,
        writer: Writer,
        progress_interval: float = 10.0,
        indicators: bool = True,  # off only to measure what the indicator stage costs (cxstream bench ingest)
        model: bool = True,  # likewise the factor-model stage
        **kw,
    ):
        super().__init__(**kw)
        self.bootstrap = bootstrap
        self.topology = topology
        self.writer = writer
        self.progress_interval = progress_interval
        self.progress = Progress()
        sources = topology.source_topics()
        self.topic_to_stream = {spec.name: logical for logical, spec in sources.items()}
        dedup = topology.dedup
        self.splitter = BatchSplitter(
            {spec.name: spec.contract for spec in sources.values()},
            lambda: SeenIds(dedup.horizon.total_seconds(), dedup.max_ids),
        )
        self.dead_letter_topic = topology.topics["dead_letters"].name
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.ready = asyncio.Event()
        self.batches_done = 0
        self.first_polled_at: float | None = None  # perf_counter of the first non-empty poll (benchmarks)
        self.last_commit_at: float | None = None
        # Derivation reads ClickHouse (history of tickets not in memory) while the previous
        # batch's rows are written: its own connection (a session takes one query at a time).
        self.reader = writer.sibling()
        self.tickets = TicketStage(topology.state.tickets, self.reader)
        self.indicators = IndicatorStage(
            topology.indicators,
            self.reader,
            {"ticket_events": topology.topics["ticket_events"].name,
             "satisfaction_events": topology.topics["satisfaction_events"].name},
        )  # fmt: skip
        self.indicator_topic = topology.topics["indicator_updates"].name
        self.with_indicators = indicators
        self.model = ModelStage(topology.model, topology.consumer.group_id)
        self.with_model = model
        self.satisfaction_topic = topology.topics["satisfaction_events"].name
        self.factor_topic = topology.topics["factor_coefficients"].name
        self.alerts = AlertStage(topology.alerts, topology.indicators, writer.database, explain=self.model.explain_recent)
        self.alert_topic = topology.topics["alerts"].name
        self.supervision_topic = topology.topics["supervision_events"].name
        self.on_alerts = None  # called with the Alert documents of each committed batch (delivery)
        self._alerts_restored = False
        self._sla_backlog: list[_Derived] = []
        self._sla_storing = asyncio.Lock()
        self.ticket_topic = topology.topics["ticket_events"].name
        self._sla_checked_at = 0.0
        self._full_gc_at = time.monotonic()
        # Held by the storage and derivation threads; stopping waits for them, so a stopped
        # agent never has a write in flight (a cancelled task does not stop its thread).
        self._storing = threading.Lock()
        self._deriving = threading.Lock()  # in-memory state: one batch derives at a time
        self._storing_raw = threading.Lock()
        self.raw_writer = writer.sibling()
        self._stopping = False
        self._version_ms = 0
        # Set while the consume loop may take batches: from an assignment's restore to the next
        # revocation. A revocation waits for the batches polled and not yet committed (_unfinished).
        self._taking = asyncio.Event()
        self._fetch_at_poll = False  # the partitions paused since the last poll (see _poll)
        self._unfinished = 0
        self._all_finished = asyncio.Event()
        self._all_finished.set()
        self._restoring: asyncio.Task | None = None
        #: the latest drains: (batches in flight, seconds, all committed in time, SLA outputs waiting to be stored)
        self.drains: collections.deque[tuple[int, float, bool, int]] = collections.deque(maxlen=16)

    async def on_start(self) -> None:
        await asyncio.to_thread(self._warm_seen_ids)
        c = self.topology.consumer
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=c.group_id,
            enable_auto_commit=False,
            auto_offset_reset=c.auto_offset_reset,
            session_timeout_ms=int(c.session_timeout.total_seconds() * 1000),
            rebalance_timeout_ms=int(c.rebalance_timeout.total_seconds() * 1000),
            heartbeat_interval_ms=max(100, int(c.session_timeout.total_seconds() * 1000) // 4),
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
            # Co-partitioning: with equal partition counts the range assignor gives a
            # worker the same partition numbers of every source topic, so a customer's
            # tickets and satisfaction events (same key) meet in one worker, and a
            # partition number identifies one worker's partial indicator cells.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self.consumer.subscribe(list(self.topic_to_stream), listener=_TicketPartitions(self))
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await self.producer.start()
        await self.consumer.start()
        log.info("ingest agent consuming %s as group %s", ", ".join(self.topic_to_stream), c.group_id)

    def _warm_seen_ids(self) -> None:
        dedup = self.topology.dedup
        for contract, (table, _, _) in TABLES.items():
            ids = self.writer.recent_event_ids(table, dedup.horizon, dedup.max_ids // 2)
            if ids:
                self.splitter.warm(contract, ids)
                log.info("dedup: remembered %d recent %s ids from ClickHouse", len(ids), table)

    async def on_stop(self) -> None:
        self._stopping = True
        if self._restoring is not None:
            self._restoring.cancel()  # its thread, if running, ends on its own; nothing is taken after it
        await asyncio.to_thread(self._wait_for_storage)
        if self.with_model and self.model.pending():
            await self._final_publication()
        if self.consumer:
            await self.consumer.stop()
        if self.producer:
            await self.producer.stop()
        for sibling in (self.raw_writer, self.reader):
            if sibling is not self.writer:
                sibling.client.close()

    @Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        c = self.topology.consumer
        timeout_ms = int(c.batch_max_wait.total_seconds() * 1000)
        sla_every = self.topology.state.tickets.sla_check_interval.total_seconds()
        # Two batches in flight: while batch N's derived rows are stored, published and
        # committed, batch N+1 is validated and derived. Commits stay in order (N+1 is
        # stored only after N is committed), and nothing is committed before it is stored.
        finishing: asyncio.Task | None = None

        async def settled() -> bool:
            """Wait for the batch in flight to be committed; False if it was not (the agent is stopping)."""
            nonlocal finishing
            if finishing is None:
                return True
            committed, finishing = await finishing, None
            return committed

        try:
            while not self.should_stop:
                # Held (no assignment restored yet, or a revocation draining): the partitions are paused and
                # the poll comes back empty, but it goes on, so the client's errors surface here and it does not
                # count this worker idle (max_poll_interval).
                polled = await self._poll(timeout_ms, c.batch_max_events)
                if polled and not self._taking.is_set():
                    # Fetched as a revocation began, or before the pause: not derived, put back.
                    for tp, msgs in polled.items():
                        self.consumer.seek(tp, msgs[0].offset)
                    polled = {}
                work = None
                if polled:
                    if self.first_polled_at is None:
                        self.first_polled_at = time.perf_counter()
                    self._batch_started()
                    try:
                        work = await self._prepare(polled)
                    finally:
                        if work is None:
                            self._batch_ended()  # given up (stopping): not committed, redelivered
                if not await settled() or (polled and work is None):
                    if work is not None:
                        self._batch_ended()
                    return  # stopping: what is not committed is redelivered to the next owner
                if work is not None:
                    finishing = asyncio.ensure_future(self._complete(work))
                    finishing.add_done_callback(lambda _: self._batch_ended())
                self._update_lag()
                if self._taking.is_set() and time.monotonic() - self._sla_checked_at >= sla_every:
                    # SLA breaches are derived from the state after the batches before them, and stored after
                    # those batches' rows and before the next batch's: their storing joins the batch in flight,
                    # so the next batch is validated and derived meanwhile (waiting for both stalled the
                    # pipeline for two stores' time every check).
                    unstored = work.derived.tickets if work is not None else ()  # the batch in flight's rows
                    await self._derive_sla_and_evict(unstored)
                    finishing = asyncio.ensure_future(self._store_sla_after(finishing))
            await settled()
        finally:
            if finishing is not None and not finishing.done():
                finishing.cancel()

    async def _poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list]:
        """The next batch; when caught up, fetched at the poll rather than right after the previous one.

        aiokafka fetches a partition again as soon as a poll has taken what it held. Caught up, that fetch
        brings the few events that arrived during the poll, and the events of the whole batch cycle that
        follows wait at the broker for the fetch after the next poll: two cycles in all. Paused between polls,
        the fetch goes out at the poll and brings everything up to then: one cycle (docs/performance.md).
        Behind (the broker held more than this poll took), the client fetches ahead as usual: a replay's next
        batch is there when it is wanted.
        """
        assert self.consumer is not None
        if self._fetch_at_poll and self._taking.is_set():
            self.consumer.resume(*self.consumer.assignment())
        self._fetch_at_poll = False
        polled = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if polled and self._taking.is_set() and self._caught_up():
            # before the client's fetch task runs (this poll woke it; it has not run yet)
            self.consumer.pause(*self.consumer.assignment())
            self._fetch_at_poll = True
        return polled

    def _batch_started(self) -> None:
        self._unfinished += 1
        self._all_finished.clear()

    def _batch_ended(self) -> None:
        self._unfinished -= 1
        if self._unfinished == 0:
            self._all_finished.set()

    async def _prepare(self, polled: dict[TopicPartition, list]) -> "_Batch | None":
        """Validate a polled batch, store its raw events and derive its state; None if stopping."""
        started = time.perf_counter()
        records = [
            RawRecord(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value)
            for messages in polled.values()
            for m in messages
        ]
        metrics.BATCH_SIZE.observe(len(records))
        # One arrival stamp per batch: a retried insert block is then identical,
        # and ClickHouse's insert deduplication drops it.
        now = utcnow()
        clock = self.tickets.sla_clock(caught_up=self._caught_up(), now=now)
        sources = self._sources(polled)
        # Validation is CPU work and storage is blocking I/O: both run in a
        # thread so heartbeats and the web server stay responsive.
        batches = await asyncio.to_thread(self._validate, records)
        positions = {tp.partition: msgs[-1].offset for tp, msgs in polled.items() if tp.topic == self.satisfaction_topic}
        arrival_ms = min(msgs[0].timestamp for msgs in polled.values())  # the batch's earliest record (alert latency)
        derived: _Derived | None = None
        raw_stored = False
        attempt = 0
        while True:
            try:
                # The raw inserts (mostly ClickHouse's own work, outside the GIL) run while
                # state and indicators are derived; each is done once, a retry redoes what failed.
                jobs = []
                if not raw_stored:
                    jobs.append(asyncio.to_thread(self._store_raw, batches, now))
                if derived is None:  # derived once: a retry stores the same rows again
                    jobs.append(asyncio.to_thread(self._derive, batches, clock, positions, arrival_ms, sources))
                results = list(await asyncio.gather(*jobs, return_exceptions=True))
                failed = [r for r in results if isinstance(r, BaseException)]
                if not raw_stored and not isinstance(results[0], BaseException):
                    raw_stored = True
                if derived is None and not isinstance(results[-1], BaseException):
                    derived = results[-1]
                if failed:
                    raise failed[0]
                # Only the commit positions, the counts and the rejections are needed from here on: the
                # events and the polled messages are freed while the next batch is derived.
                offsets = {tp: msgs[-1].offset + 1 for tp, msgs in polled.items()}
                tallies = {contract: b.tally() for contract, b in batches.items()}
                return _Batch(offsets, arrival_ms, tallies, derived, len(records), started)
            except _Stopping:
                return None  # not committed: redelivered to whoever takes over
            except Exception as exc:
                if not await self._backoff(exc, len(records), attempt := attempt + 1):
                    return None

    def _validate(self, records: list[RawRecord]) -> dict[str, IngestBatch]:
        with metrics.stage("validate"):
            return self.splitter.split(records)

    async def _backoff(self, exc: Exception, records: int, attempt: int) -> bool:
        """Log a failed attempt and wait before the next; False if the agent is stopping instead."""
        metrics.SINK_FAILURES.inc()
        delay = retry_delay(attempt)
        log.error("storing a batch of %d records failed (%s); retrying in %.1fs", records, exc, delay)
        await self.sleep(delay)
        return not self.should_stop  # stopping: not committed, redelivered to whoever takes over

    async def _complete(self, work: "_Batch") -> bool:
        """Store a prepared batch's derived rows, publish, commit; False if stopped before the commit."""
        derived = work.derived
        attempt = 0
        while True:
            try:
                with metrics.stage("store_derived"):  # a batch's own rows (SLA breaches are stored apart)
                    await asyncio.to_thread(self._store_checked, derived)
                with metrics.stage("publish"):
                    await self._publish(work.tallies, derived)
                break
            except _Stopping:
                return False
            except Exception as exc:
                if not await self._backoff(exc, work.records, attempt := attempt + 1):
                    return False
        try:
            with metrics.stage("commit"):
                await self.consumer.commit(work.offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # Partitions moved to another worker mid-batch: it will redeliver
            # this batch, which is stored idempotently. Not an error for us.
            log.warning("offsets of a stored batch not committed (%s); the new owner redelivers it", exc)
        self.last_commit_at = time.perf_counter()
        behind = time.time() - work.arrival_ms / 1000
        if behind >= 0:  # a time-lapse simulated feed stamps arrival times ahead of the wall clock
            metrics.EVENT_TO_COMMIT_SECONDS.observe(behind)
        if derived.alerts:
            self._deliver(derived.alerts)
        # What survived the batch is long-lived state (tickets, contributions, seen ids):
        # move it out of the collector's generations so collections stay proportional to
        # the next batch, not to the whole heap. Acyclic objects are still freed by refcount.
        gc.freeze()
        # the batch's transients, freed now: back to the OS, not held in the allocator's arenas (in a thread: a
        # trim of a heap of gigabytes can take tens of milliseconds)
        await asyncio.to_thread(give_back)
        if time.monotonic() - self._full_gc_at > 600:  # now and then, collect what was frozen too (cycles)
            self._full_gc_at = time.monotonic()
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        self._count(work.tallies)
        self.batches_done += 1
        metrics.BATCH_SECONDS.observe(time.perf_counter() - work.started)
        return True

    def _alert_tables(self, out: AlertOutput) -> list[tuple[str, pa.Table]]:
        tables = [("alerts", self.alerts.alerts_table(out.alerts))] if out.alerts else []
        if out.supervision:
            events, tickets = self.alerts.supervision_tables(out.supervision, out.tickets, utcnow())
            tables += [("supervision_events", events), ("supervision_tickets", tickets)]
        return tables

    async def _final_publication(self) -> None:
        """What the models learned since their last publication, and a snapshot, so a restart resumes here."""
        def publish() -> ModelOutput:
            with self._deriving:  # never while a batch or an SLA check changes the models
                return self.model.publish(utcnow())

        out = await asyncio.to_thread(publish)
        try:
            await asyncio.to_thread(self._store_model, out)
            if self.producer is not None:
                await self._send(self.factor_topic, out.messages)
        except Exception as exc:  # stopping anyway: the next start learns the stored events again
            log.warning("final factor-model publication failed (%s); the next start relearns from ClickHouse", exc)

    def _store_model(self, out: ModelOutput) -> None:
        for table, rows in _model_tables(out):
            self._insert(table, rows)
        metrics.MODEL_PUBLISHED.inc()

    def active_alerts(self, statuses: tuple[str, ...] = ("pending", "firing")) -> list[dict]:
        """The current alerts as Alert documents (blocking: call from a thread)."""
        with self._deriving:
            now = utcnow()
            return [self.alerts.document(t, now) for t in self.alerts.engine.alerts(statuses)]

    async def supervise(self, ticket_id: str, action: str, by: str, note: str = "", assignee: str = "") -> dict:
        """Assign, acknowledge or close a supervision ticket: stored, published, measured; returns the ticket.

        Raises :class:`~stream.alerts.supervision.SupervisionError` for an unknown ticket or a change its
        status does not allow.
        """
        book = self.alerts.book
        ticket = book.get(ticket_id)
        alert_status = self.alerts.engine.status(ticket.fingerprint) or "resolved"
        now = utcnow()
        if action == "assign":
            ticket, event = book.assign(ticket_id, assignee, by, note, now, alert_status)
        elif action == "acknowledge":
            ticket, event = book.acknowledge(ticket_id, by, note, now, alert_status)
        elif action == "close":
            ticket, event = book.close(ticket_id, by, note, now, alert_status)
        else:
            raise SupervisionError(f"unknown action {action!r}: assign, acknowledge or close")
        out = AlertOutput(supervision=[event], tickets=[ticket])
        events, tickets = self.alerts.supervision_tables(out.supervision, out.tickets, now)

        def store() -> None:
            with self._storing_raw:
                self._insert("supervision_events", events, self.raw_writer)
                self._insert("supervision_tickets", tickets, self.raw_writer)

        await asyncio.to_thread(store)
        await self._send(self.supervision_topic, self.alerts.messages(out)[1])
        metrics.SUPERVISION_EVENTS.labels(event["action"]).inc()
        if event["time_to_ack_s"] is not None:
            metrics.SUPERVISION_ACK_SECONDS.observe(event["time_to_ack_s"])
        if event["time_to_close_s"] is not None:
            metrics.SUPERVISION_CLOSE_SECONDS.observe(event["time_to_close_s"])
        if event["closed_while_bad"]:
            metrics.SUPERVISION_CLOSED_WHILE_BAD.inc()
            log.warning("supervision ticket %s closed while its alert is still %s", ticket_id, alert_status)
        return ticket.as_dict()

    def _deliver(self, out: AlertOutput) -> None:
        """Hand committed alerts to delivery (a queue: never waits for Alertmanager or the webhook)."""
        if self.on_alerts is not None and out.alerts:
            self.on_alerts(out.alerts)

    def _wait_for_storage(self) -> None:
        with self._deriving, self._storing, self._storing_raw:
            pass

    def _derive(
        self,
        batches: dict[str, IngestBatch],
        clock: datetime,
        positions: dict[int, int],
        arrival_ms: int | None = None,
        sources: tuple[list, list] | None = None,
    ) -> _Derived:
        """Lifecycle state, indicator cells and factor-model learning for a batch (reads ClickHouse first)."""
        with self._deriving, metrics.stage("derive"):
            if self._stopping:
                raise _Stopping("ingest agent stopping")
            if sources is not None:  # under the lock: a rebalance changes the cube's partitions in a thread too
                self.indicators.cube.sources(*sources)
            partition_of = self.tickets.store.partition_of
            needing = self.tickets.needing_history(batches)
            if needing:
                self.tickets.reload(needing)
                if self.with_indicators:
                    self.indicators.remember_stored(needing, partition_of)
            states = self.tickets.apply(batches, clock)
            late = self.indicators.apply(batches, states, partition_of) if self.with_indicators else []
            if self.with_model:
                self.model.observe(states)
                sat = batches.get("satisfaction_event")
                learned = self.model.learn(sat.accepted if sat else [], positions)
                metrics.MODEL_LEARNED.inc(learned)
            return self._outputs(states, late, arrival_ms)

    def _outputs(self, states: list, late: list, arrival_ms: int | None = None) -> _Derived:
        cells = self.indicators.flush()
        version = self._next_version()
        ind = self.indicators
        messages = update_messages(ind.cube, cells, ind.writer_id, version)
        model = self.model.publish(utcnow()) if self.with_model and self.model.due() else None
        alerts = None
        if self.with_indicators and self.alerts.windows:
            updates = self.alerts.cell_updates(ind.cube, cells, ind.writer_id)
            alerts = self.alerts.apply(updates, arrival_ms, utcnow(), ind.cube.watermark)
            metrics.count_alerts(alerts.alerts, len(self.alerts.engine), self.alerts.engine.counts())
        # Only the tables are kept, not the states and cells they come from: two batches in flight held both
        # (~40 MB more at the peak of a million-customer ingest).
        tables = []
        if states:
            tables += [("ticket_state", ticket_state_table(states, version)),
                       ("ticket_steps", ticket_steps_table(states, version))]  # fmt: skip
        if len(cells):
            tables.append(("indicator_cells", cells_table(ind.cube, cells, ind.writer_id, version, version)))
        if late:
            tables.append(("indicator_too_late", too_late_table(late, ind.cube.watermark, version)))
        if model is not None:
            tables += _model_tables(model)
        if alerts:
            tables += self._alert_tables(alerts)
        return _Derived(tables, [s.ticket_id for s in states], len(late), messages, model, alerts)

    def _store_raw(self, batches: dict[str, IngestBatch], now: datetime) -> None:
        """Accepted events, dead letters and resends (through the second connection)."""
        with self._storing_raw, metrics.stage("store_raw"):
            if self._stopping:  # raise, so the batch is not committed: the next owner redelivers it
                raise _Stopping("ingest agent stopping")
            rejected: list[Rejection] = []
            duplicates: list[Accepted] = []
            for contract, batch in batches.items():
                sink = TABLES[contract]
                self._insert(sink.inbox, sink.build(batch.accepted, now), self.raw_writer)
                rejected.extend(batch.rejected)
                duplicates.extend(batch.duplicates)
            if rejected:
                self._insert("dead_letters", dead_letter_table(rejected, now), self.raw_writer)
            if duplicates:
                self._insert("duplicates", duplicate_table(duplicates, now), self.raw_writer)

    def _insert(self, table: str, data, writer: Writer | None = None) -> None:
        with metrics.SINK_SECONDS.labels(table).time():
            (writer or self.writer).insert(table, data)

    def _store_derived(self, d: _Derived) -> None:
        for table, rows in d.tables:
            self._insert(table, rows)
        if d.late:
            metrics.INDICATOR_TOO_LATE.inc(d.late)
        if d.model is not None:
            metrics.MODEL_PUBLISHED.inc()
        if d.alerts and d.alerts.supervision:
            metrics.SUPERVISION_EVENTS.labels("opened").inc(len(d.alerts.supervision))

    def _store_checked(self, d: _Derived) -> None:
        with self._storing:
            if self._stopping:
                raise _Stopping("ingest agent stopping")
            self._store_derived(d)

    def _next_version(self) -> int:
        """updated_at (ms) for state rows: strictly increasing, so the newest write wins in ClickHouse."""
        self._version_ms = max(self._version_ms + 1, int(time.time() * 1000))
        return self._version_ms

    async def _derive_sla_and_evict(self, unstored: Iterable[str] = ()) -> None:
        """Derive the breaches of silent open tickets (queued for storing), then evict stale tickets.

        ``unstored``: the tickets of the batch in flight. Neither they nor the breaches queued are stored yet, and
        an evicted ticket is read back from ClickHouse when an event names it again: those tickets stay in
        memory until a later check.
        """
        self._sla_checked_at = time.monotonic()
        clock = self.tickets.sla_clock(caught_up=self._caught_up())
        # CPU work on the state: in a thread, so the event loop (heartbeats, the web server) stays free
        states = await asyncio.to_thread(self._derive_sla, clock)
        if states:
            metrics.SLA_OVERDUE.inc(len(states))
            log.info("SLA: %d open tickets went past their deadline", len(states))
        keep = set(unstored)
        keep.update(t for d in self._sla_backlog for t in d.tickets)
        await asyncio.to_thread(self._evict, clock, keep)
        metrics.STATE_TICKETS.set(len(self.tickets.store))

    async def _store_sla_after(self, batch: asyncio.Future | None) -> bool:
        """Store the breaches once the batch in flight is committed; False if it was not (stopping).

        What fails to store stays queued for the next check.
        """
        if batch is not None and not await batch:
            return False
        await self._store_sla_backlog()
        return True

    async def _store_sla_backlog(self) -> None:
        """Store (and publish) the SLA breaches derived so far; what fails stays queued for the next check.

        One caller at a time: a revocation's drain can come while the consume loop's SLA check is storing, and
        both would store the head of the queue and pop it (the second pop failed the revocation listener).
        """
        async with self._sla_storing:
            await self._store_sla_queue()

    async def _store_sla_queue(self) -> None:
        while self._sla_backlog:  # derived once, stored (and published) until it succeeds
            if self._stopping or self.should_stop:
                break  # not stored: the next owner derives it again from the restored tickets
            derived = self._sla_backlog[0]
            try:
                await asyncio.to_thread(self._store_checked, derived)
                await self._send(self.indicator_topic, derived.messages)
                if derived.model is not None:
                    await self._send(self.factor_topic, derived.model.messages)
                if derived.alerts:
                    alerts, events = self.alerts.messages(derived.alerts)
                    await self._send(self.alert_topic, alerts)
                    await self._send(self.supervision_topic, events)
                    self._deliver(derived.alerts)
            except _Stopping:
                break
            except Exception as exc:
                if self._stopping or self.should_stop:
                    break  # stopping mid-send: the next owner derives them again
                log.error("storing %d SLA breaches failed (%s); will retry", len(derived.tickets), exc)
                break
            self._sla_backlog.pop(0)

    def _derive_sla(self, clock: datetime) -> list:
        """States of tickets that went past their deadline, and their outputs queued for storing."""
        with self._deriving:
            if self._stopping:
                return []  # not derived: the next owner finds these breaches again
            states = self.tickets.check_sla(clock)
            if states or (self.with_model and self.model.due()):  # the model publishes on time when idle too
                partition_of = self.tickets.store.partition_of
                late = self.indicators.apply_states(states, partition_of) if self.with_indicators else []
                self._sla_backlog.append(self._outputs(states, late))
            return states

    def _evict(self, clock: datetime, keep: set[str] = frozenset()) -> None:
        with self._deriving:
            if not self._stopping and self.tickets.evict(clock, keep):
                self.indicators.forget_tickets(self.tickets.store.records)

    async def _publish(self, batches: dict[str, Tally], derived: _Derived) -> None:
        """Dead letters (original bytes, reason in headers) and indicator updates; waits for the acks."""
        assert self.producer is not None
        futures = [
            await self.producer.send(
                self.dead_letter_topic, value=r.record.value, key=r.record.key, headers=dead_letter_headers(r)
            )
            for batch in batches.values()
            for r in batch.rejected
        ]
        futures += [await self.producer.send(self.indicator_topic, value=v, key=k) for k, v in derived.messages]
        metrics.MESSAGES_OUT.labels(self.dead_letter_topic).inc(len(futures) - len(derived.messages))
        metrics.MESSAGES_OUT.labels(self.indicator_topic).inc(len(derived.messages))
        if derived.model is not None:
            futures += [await self.producer.send(self.factor_topic, value=v, key=k) for k, v in derived.model.messages]
            metrics.MESSAGES_OUT.labels(self.factor_topic).inc(len(derived.model.messages))
        if derived.alerts:
            alerts, events = self.alerts.messages(derived.alerts)
            futures += [await self.producer.send(self.alert_topic, value=v, key=k) for k, v in alerts]
            futures += [await self.producer.send(self.supervision_topic, value=v, key=k) for k, v in events]
            metrics.MESSAGES_OUT.labels(self.alert_topic).inc(len(alerts))
            metrics.MESSAGES_OUT.labels(self.supervision_topic).inc(len(events))
        if futures:
            await asyncio.gather(*futures)

    async def _send(self, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        assert self.producer is not None
        futures = [await self.producer.send(topic, value=v, key=k) for k, v in messages]
        if futures:
            await asyncio.gather(*futures)
            metrics.MESSAGES_OUT.labels(topic).inc(len(futures))

    def _count(self, batches: dict[str, Tally]) -> None:
        for contract, b in batches.items():
            stream = contract
            metrics.EVENTS.labels(stream, "ingested").inc(b.accepted)
            metrics.EVENTS.labels(stream, "rejected").inc(len(b.rejected))
            metrics.EVENTS.labels(stream, "duplicate").inc(b.duplicates)
            for r in b.rejected:
                metrics.REJECTS.labels(stream, r.reason).inc()
        self.progress.add(batches)
        metrics.SEEN_IDS.set(sum(len(s) for s in self.splitter.seen.values()))
        metrics.MODEL_CUSTOMERS.set(len(self.model.history))

    def restore(self, ticket_partitions: list[int], partitions: list[int], satisfaction_partitions: list[int]) -> None:
        """After an assignment: the partitions' watermark, their open tickets and what those contributed,
        the customer histories and the factor models."""
        with self._deriving, self._storing:
            self.indicators.restore_watermark(partitions)
            where = self.tickets.open_tickets(ticket_partitions)
            self.tickets.restore_open(ticket_partitions, where)
            if ticket_partitions:  # what the restored tickets contributed (those in memory are known)
                self.indicators.remember_where(*where, self.tickets.store.partition_of)
            if self.with_model:
                self.model.restore(self.writer, satisfaction_partitions, ticket_partitions)
                metrics.MODEL_CUSTOMERS.set(len(self.model.history))
            if self.with_indicators and not self._alerts_restored:
                marks = self.indicators.cube.marks  # restored above: each source partition's newest event time
                self.alerts.restore(self.writer, min(marks.values()) if marks else None)
                self._alerts_restored = True

    def _positions(self) -> dict[TopicPartition, tuple[int | None, int | None]]:
        """Assigned partition -> (next offset to read, high watermark), None where not known yet."""
        consumer = self.consumer
        out = {}
        try:
            assignment = consumer._subscription.subscription.assignment  # noqa: SLF001 (aiokafka keeps positions here)
        except AttributeError:
            return out
        if assignment is None:
            return out
        for tp in consumer.assignment():
            state = assignment.state_value(tp)
            if state is None:
                continue
            out[tp] = (state.position if state.has_valid_position else None, state.highwater)
        return out

    def _sources(self, polled: dict[TopicPartition, list]) -> tuple[list, list]:
        """The source partitions assigned, and those with nothing to read (for the indicator cube)."""
        positions = self._positions()
        assigned = [(tp.topic, tp.partition) for tp in self.consumer.assignment()]
        idle = [
            (tp.topic, tp.partition)
            for tp, (position, high) in positions.items()
            if tp not in polled and position is not None and high is not None and position >= high
        ]
        return assigned, idle

    def _caught_up(self) -> bool:
        """Nothing left to read: every assigned partition's position is known and at its high watermark.

        Not before the positions are known: right after an assignment a poll comes back empty while the
        fetcher looks up committed offsets, and judging then at the wall clock would evict and breach
        tickets a backlog is about to touch.
        """
        positions = self._positions()
        return bool(positions) and all(p is not None and h is not None and p >= h for p, h in positions.values())

    def _update_lag(self) -> None:
        total = 0
        for tp, (position, high) in self._positions().items():
            if position is None or high is None:
                continue
            lag = max(0, high - position)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
            total += lag
        self.progress.lag = total

    @property
    def last_drain(self) -> tuple[int, float, bool, int] | None:
        return self.drains[-1] if self.drains else None

    async def drain(self) -> None:
        """Before partitions are revoked: take no new batch, and have every batch in flight committed.

        Without this a batch derived into this worker's indicator cells, but committed only after the
        revocation, would be counted again by the partition's new owner (its commit fails, so it is
        redelivered, while its cells are already stored). SLA breaches derived and not yet stored are stored
        too. The wait is bounded by three quarters of the rebalance timeout, the time Kafka gives a member to
        rejoin: past it the gap remains, and a warning and a metric say so (a rebalance timeout shorter than
        a batch's derivation and storage is too short).
        """
        self.hold()
        if self.should_stop:
            return  # stopping: what is not committed is redelivered anyway
        budget = 0.75 * self.topology.consumer.rebalance_timeout.total_seconds()
        started = time.perf_counter()
        in_flight, sla_waiting = self._unfinished, len(self._sla_backlog)
        try:
            await asyncio.wait_for(self._all_finished.wait(), budget)
            if self._sla_backlog:
                await asyncio.wait_for(self._store_sla_backlog(), max(0.1, budget - (time.perf_counter() - started)))
            complete = not self._sla_backlog
        except asyncio.TimeoutError:
            complete = False
        seconds = time.perf_counter() - started
        self.drains.append((in_flight, seconds, complete, sla_waiting))
        metrics.HANDOVER_SECONDS.observe(seconds)
        if not complete and not self.should_stop:
            metrics.HANDOVER_LATE.inc()
            log.warning("rebalance: batches in flight not committed within %.1fs; the new owner may count them twice "
                        "(raise consumer.rebalance_timeout above a batch's time)", budget)  # fmt: skip

    def hold(self) -> None:
        """Take no batch (the partitions paused) until :meth:`resume`: while draining, and from an assignment
        until its state is restored."""
        self._taking.clear()
        self.ready.clear()
        if self.consumer is not None:
            self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        """After an assignment's state is restored: take batches. Not before: a batch's raw events, stored
        while the restore reads ClickHouse, would hide the follow-ups waiting for their ticket."""
        if self.consumer is not None:
            self.consumer.resume(*self.consumer.assignment())
        self._taking.set()
        self.ready.set()  # ready = partitions assigned and their state restored

    @Service.task
    async def _report_progress(self) -> None:
        while not self.should_stop:
            await self.sleep(self.progress_interval)
            if self.consumer is not None:
                log.info(self.progress.line())


class _TicketPartitions(ConsumerRebalanceListener):
    """Keeps ticket state in step with the ticket-topic partitions this worker owns.

    The hand-over is ordered: a revocation first drains the worker (its batches in flight committed), then
    releases the partitions' state; an assignment pauses the partitions and restores their state in a task,
    so the listener returns at once and heartbeats go on during a long restore (a million tickets take
    seconds, more than a session timeout), then takes batches again.
    """

    def __init__(self, agent: IngestAgent):
        self.agent = agent

    async def on_partitions_revoked(self, revoked) -> None:
        agent = self.agent
        await agent.drain()
        restoring, agent._restoring = agent._restoring, None  # noqa: SLF001
        if restoring is not None and not restoring.done():
            restoring.cancel()  # a restore of the partitions now revoked: never resumed; its thread holds the
            # derivation lock until it ends, and _release waits for it
        await asyncio.to_thread(self._release, revoked)

    def _release(self, revoked) -> None:
        with self.agent._deriving:  # noqa: SLF001 (never while a batch is being derived)
            parts = [tp.partition for tp in revoked if tp.topic == self.agent.ticket_topic]
            if parts:
                dropped = self.agent.tickets.drop_partitions(parts)
                log.info("state: released %d tickets of partitions %s", dropped, parts)
            self.agent.indicators.drop_partitions(tp.partition for tp in revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        agent = self.agent
        agent.hold()
        agent._restoring = asyncio.ensure_future(self._restore(assigned))  # noqa: SLF001

    async def _restore(self, assigned) -> None:
        agent = self.agent
        parts = [tp.partition for tp in assigned if tp.topic == agent.ticket_topic]
        sat_parts = [tp.partition for tp in assigned if tp.topic != agent.ticket_topic]
        attempt = 0
        while parts or sat_parts:
            if agent.should_stop:
                return
            started = time.perf_counter()
            try:
                await asyncio.to_thread(agent.restore, parts, sorted(set(parts) | set(sat_parts)), sorted(sat_parts))
                metrics.RESTORE_SECONDS.observe(time.perf_counter() - started)
                break
            except Exception as exc:  # ClickHouse away: no batch is taken before the state is back
                metrics.RESTORE_FAILURES.inc()
                attempt += 1
                delay = retry_delay(attempt)
                log.error("restoring the state of partitions %s failed (%s); retrying in %.1fs", parts, exc, delay)
                await asyncio.sleep(delay)
        agent.resume()
