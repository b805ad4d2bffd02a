"""Ingest: raw Kafka records -> validated, deduplicated events, or dead letters.

``decode`` and ``dedup`` are pure and synchronous; ``agent`` is the thin Faust
service that polls batches, calls them, stores the result and commits.
"""
