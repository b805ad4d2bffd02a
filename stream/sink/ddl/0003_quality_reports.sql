-- Data-quality report per source system and arrival window (stream.quality.report):
-- completeness, validity, timeliness, duplicates and lifecycle findings. One row
-- per (window, source system); recomputing a window replaces its rows (the
-- newest computed_at wins; read with FINAL). window_seconds is part of the key
-- so a daily and an hourly report starting at the same instant do not replace
-- each other. source_system '' holds rejects that name no source (not_json...).
CREATE TABLE IF NOT EXISTS {db}.quality_reports
(
    window_start               DateTime('UTC'),
    window_seconds             UInt32,
    source_system              LowCardinality(String),
    accepted                   UInt64,
    rejected                   UInt64,
    rejected_by_reason         Map(LowCardinality(String), UInt64),
    missing_mandatory          UInt64,
    missing_optional           UInt64,
    missing_optional_by_field  Map(LowCardinality(String), UInt64),
    optional_expected          UInt64,
    invalid                    UInt64,
    lag_p50_s                  Nullable(Float64),
    lag_p95_s                  Nullable(Float64),
    lag_p99_s                  Nullable(Float64),
    late                       UInt64,
    lateness_s                 UInt32,
    duplicates                 UInt64,
    findings                   Map(LowCardinality(String), UInt64),
    completeness_pct           Nullable(Float64),
    optional_fill_pct          Nullable(Float64),
    validity_pct               Nullable(Float64),
    duplicate_pct              Nullable(Float64),
    late_pct                   Nullable(Float64),
    computed_at                DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, source_system, window_seconds)
TTL window_start + INTERVAL {raw_ttl_days} DAY;
