"""Read side: questions answered from ClickHouse (tracing; later explanations)."""
