"""cxstream: service-perception streaming for telecom operators.

The package is laid out along the flow of an event:

``contract`` (what upstream sends) -> ``ingest`` (decode, validate, dedup,
dead-letter) -> ``sink`` (ClickHouse). ``runtime`` holds the Faust app and the
embedded broker/engine; ``simulate`` produces realistic upstream traffic.
"""

__version__ = "0.1.0"
