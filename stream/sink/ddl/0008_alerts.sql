-- Alerts: one row per status change of one alert episode (alert_id = fingerprint
-- and the start of its first breaching window). The same change stored twice (a
-- retried insert, a redelivered batch) collapses to one row.
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id          String,
    fingerprint       String,
    rule              LowCardinality(String),
    status            LowCardinality(String),
    severity          LowCardinality(String),
    indicator         LowCardinality(String),
    window            LowCardinality(String),
    scope             LowCardinality(String),
    province          LowCardinality(String),
    city              LowCardinality(String),
    district          LowCardinality(String),
    channel           LowCardinality(String),
    business_line     LowCardinality(String),
    labels            Map(String, String),
    comparator        LowCardinality(String),
    threshold         Float64,
    change            LowCardinality(String),
    value             Nullable(Float64),
    baseline          Nullable(Float64),
    volume            Float64,
    window_start      DateTime('UTC'),
    window_end        DateTime('UTC'),
    since             DateTime('UTC'),
    summary           String,
    top_factors       String,               -- JSON list of factor, coefficient, stderr, exposure, impact
    dashboard_url     String,
    runbook           String,
    predicted_value   Nullable(Float64),
    predicted_window_start Nullable(DateTime('UTC')),
    evaluated_at      DateTime64(3, 'UTC'),
    trigger_arrival   Nullable(DateTime64(3, 'UTC'))
)
ENGINE = ReplacingMergeTree(evaluated_at)
PARTITION BY toYYYYMM(since)
ORDER BY (fingerprint, since, status)
SETTINGS non_replicated_deduplication_window = 1000;

-- Supervision tickets: every change (the audit trail), and the current state
-- of each ticket (newest version wins; read with FINAL).
CREATE TABLE IF NOT EXISTS {db}.supervision_events
(
    ticket_id         String,
    action            LowCardinality(String),
    status            LowCardinality(String),
    at                DateTime64(3, 'UTC'),
    by                String,
    assignee          String,
    note              String,
    alert_id          String,
    fingerprint       String,
    rule              LowCardinality(String),
    alert_status      LowCardinality(String),
    closed_while_bad  Nullable(Bool),
    time_to_ack_s     Nullable(Float64),
    time_to_close_s   Nullable(Float64)
)
ENGINE = ReplacingMergeTree
ORDER BY (ticket_id, at, action);

CREATE TABLE IF NOT EXISTS {db}.supervision_tickets
(
    ticket_id         String,
    alert_id          String,
    fingerprint       String,
    rule              LowCardinality(String),
    severity          LowCardinality(String),
    summary           String,
    province          LowCardinality(String),
    city              LowCardinality(String),
    district          LowCardinality(String),
    status            LowCardinality(String),
    assignee          String,
    opened_at         DateTime64(3, 'UTC'),
    acknowledged_at   Nullable(DateTime64(3, 'UTC')),
    closed_at         Nullable(DateTime64(3, 'UTC')),
    closed_while_bad  Nullable(Bool),
    time_to_ack_s     Nullable(Float64),
    time_to_close_s   Nullable(Float64),
    updated_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY ticket_id;
