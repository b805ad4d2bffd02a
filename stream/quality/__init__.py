"""Data quality per source system and arrival window: computed in ClickHouse, stored, exported, printed.

``quality_report`` computes, ``store_report`` keeps it in ``quality_reports``,
``metrics.export`` sets the Prometheus gauges, ``format_report``/``report_json``
render it for ``cxstream quality``.
"""

from .report import (
    OPTIONAL_FIELDS,
    SourceQuality,
    format_report,
    quality_report,
    report_from_json,
    report_json,
    store_report,
    stored_report,
)

__all__ = [
    "OPTIONAL_FIELDS",
    "SourceQuality",
    "format_report",
    "quality_report",
    "report_from_json",
    "report_json",
    "store_report",
    "stored_report",
]
