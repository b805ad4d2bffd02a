-- Raw events, one row per accepted event; the record of truth for tracing and
-- for recomputing any indicator. ReplacingMergeTree collapses a redelivered
-- event (same sort key) and identical retried insert blocks are dropped by the
-- insert deduplication window, so a crash between insert and offset commit
-- never shows an event twice.
--
-- ticket_events is sorted by ticket first: tracing a ticket is a primary-key
-- range read. District analytics read by month partition plus a skip index.
CREATE TABLE IF NOT EXISTS {db}.ticket_events
(
    event_id             String,
    event_time           DateTime64(3, 'UTC'),
    source_system        LowCardinality(String),
    customer_id          String,
    ticket_id            String,
    step                 LowCardinality(String),
    province             LowCardinality(String),
    city                 LowCardinality(String),
    district             LowCardinality(String),
    channel              LowCardinality(String),
    business_line        LowCardinality(String),
    complaint_category   LowCardinality(String),
    complaint_phenomenon LowCardinality(String),
    customer_tier        LowCardinality(String),
    department           LowCardinality(String),
    problem_location     LowCardinality(String),
    closure_type         LowCardinality(String),
    sla_deadline         Nullable(DateTime64(3, 'UTC')),
    note                 String,
    schema_version       UInt8,
    kafka_partition      UInt16,
    kafka_offset         UInt64,
    ingested_at          DateTime64(3, 'UTC'),
    INDEX idx_district district TYPE set(0) GRANULARITY 4,
    INDEX idx_customer customer_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (ticket_id, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL {raw_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Satisfaction events are read by district and time (indicators, dashboards);
-- the ticket they follow is found through a bloom-filter index.
CREATE TABLE IF NOT EXISTS {db}.satisfaction_events
(
    event_id             String,
    event_time           DateTime64(3, 'UTC'),
    source_system        LowCardinality(String),
    customer_id          String,
    contact_id           String,
    ticket_id            String,
    channel              LowCardinality(String),
    province             LowCardinality(String),
    city                 LowCardinality(String),
    district             LowCardinality(String),
    business_line        LowCardinality(String),
    customer_tier        LowCardinality(String),
    plan                 LowCardinality(String),
    overall_score        UInt8,
    dim_overall_service  Nullable(UInt8),
    dim_reach_speed      Nullable(UInt8),
    dim_ivr_menu         Nullable(UInt8),
    dim_agent_attitude   Nullable(UInt8),
    dim_agent_ability    Nullable(UInt8),
    dim_call_outcome     Nullable(UInt8),
    nps                  Nullable(UInt8),
    problem_solved       Nullable(Bool),
    schema_version       UInt8,
    kafka_partition      UInt16,
    kafka_offset         UInt64,
    ingested_at          DateTime64(3, 'UTC'),
    INDEX idx_ticket ticket_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_customer customer_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (district, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL {raw_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Rejected records with the reason and the original bytes. Keyed by the Kafka
-- position so a redelivered record is stored once; partitioned by the Kafka
-- timestamp (not arrival) so a redelivery lands in the same partition.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    source_topic     LowCardinality(String),
    kafka_partition  UInt16,
    kafka_offset     UInt64,
    kafka_timestamp  DateTime64(3, 'UTC'),
    kafka_key        String,
    payload          String,
    reason           LowCardinality(String),
    field            LowCardinality(String),
    detail           String,
    source_system    LowCardinality(String),
    event_id         String,
    received_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(kafka_timestamp)
ORDER BY (source_topic, kafka_partition, kafka_offset)
TTL toDateTime(kafka_timestamp) + INTERVAL {dead_letter_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
