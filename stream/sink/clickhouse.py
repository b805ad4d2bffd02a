"""ClickHouse adapter: one client code path for chDB (embedded) and a server.

The DDL in ``ddl/NNNN_name.sql`` is versioned and idempotent; :func:`migrate`
applies what is missing at start and records it in ``schema_migrations``.
Inserts are Arrow tables (the fastest path on both chDB and a server) with
bounded retries; a retried block is deduplicated by ClickHouse itself.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from importlib import resources

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

_DDL_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


def connect(dsn: str) -> Client:
    """A client for ``chdb:///dir`` (embedded) or ``http(s)://user:pass@host:port/``."""
    return clickhouse_connect.get_client(dsn=dsn)


def _days(value: timedelta) -> int:
    return max(1, round(value.total_seconds() / 86400))


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every DDL file, in order."""
    out = []
    for entry in resources.files("stream.sink").joinpath("ddl").iterdir():
        match = _DDL_NAME.match(entry.name)
        if match:
            out.append((int(match[1]), match[2], entry.read_text()))
    return sorted(out)


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def migrate(client: Client, database: str, raw_ttl: timedelta, dead_letter_ttl: timedelta) -> list[int]:
    """Apply missing DDL versions; returns the versions applied now."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows}
    params = {"db": database, "raw_ttl_days": _days(raw_ttl), "dead_letter_ttl_days": _days(dead_letter_ttl)}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        for statement in _statements(sql):
            client.command(statement.format(**params))
        client.command(
            f"INSERT INTO {database}.schema_migrations (version, name) VALUES ({version}, '{name}')"
        )
        log.info("applied ClickHouse migration %04d_%s", version, name)
        applied.append(version)
    return applied


_INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}


class Writer:
    """Batched inserts with retries and backoff.

    Synchronous on purpose: chDB has no async client, so the ingest agent calls
    it in a worker thread and the event loop stays free.
    """

    def __init__(
        self,
        client: Client,
        database: str,
        retries: int = 5,
        backoff: timedelta = timedelta(milliseconds=200),
        on_retry: Callable[[str, Exception], None] | None = None,
        dsn: str | None = None,
    ):
        self.client = client
        self.dsn = dsn
        self.database = database
        self.retries = retries
        self.backoff_s = backoff.total_seconds()
        self.on_retry = on_retry

    def sibling(self) -> "Writer":
        """A writer with its own connection, for a second thread (a server session takes one query at a time)."""
        if self.dsn is None:
            return self
        return Writer(connect(self.dsn), self.database, self.retries, timedelta(seconds=self.backoff_s),
                      self.on_retry, self.dsn)  # fmt: skip

    def insert(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        for attempt in range(self.retries + 1):
            try:
                # A retried block is dropped by insert deduplication, also where a materialized
                # view writes it on (the raw inboxes, DDL 0009; ClickHouse < 26 does not by default).
                self.client.insert_arrow(f"{self.database}.{table}", data, settings=_INSERT_SETTINGS)
                return
            except Exception as exc:  # the driver raises several types; all are worth a retry
                if attempt == self.retries:
                    raise
                if self.on_retry:
                    self.on_retry(table, exc)
                delay = self.backoff_s * 2**attempt
                log.warning("insert into %s failed (%s); retry %d in %.1fs", table, exc, attempt + 1, delay)
                time.sleep(delay)

    def rows(self, sql: str, parameters: dict | None = None) -> Iterator[Sequence]:
        """A query's rows, a block at a time. A restore reads millions of rows, and a materialized result holds
        all of them at once (hundreds of MB at the peak). Run no other query on this client meanwhile."""
        with self.client.query_row_block_stream(sql, parameters=parameters) as stream:
            for block in stream:
                yield from block

    def recent_event_ids(self, table: str, horizon: timedelta, limit: int) -> list[str]:
        """Event ids stored within the horizon, newest first: warms the dedup set after a restart."""
        seconds = int(horizon.total_seconds())
        result = self.client.query(
            f"SELECT event_id FROM {self.database}.{table} "
            f"WHERE ingested_at >= now64(3) - INTERVAL {seconds} SECOND "
            f"ORDER BY ingested_at DESC LIMIT {int(limit)}"
        )
        return [row[0] for row in result.result_rows]
