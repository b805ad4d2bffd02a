"""Sink: ClickHouse storage (versioned DDL, batched idempotent inserts)."""
