"""Per-ticket state kept by the stream: the pure lifecycle fold and the per-ticket event bag."""
