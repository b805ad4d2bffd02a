-- Arrival time of every stored event (the Kafka record timestamp): data-quality
-- timeliness is arrival minus event time, per source system.
ALTER TABLE {db}.ticket_events ADD COLUMN IF NOT EXISTS kafka_timestamp DateTime64(3, 'UTC') DEFAULT ingested_at AFTER kafka_offset;
ALTER TABLE {db}.satisfaction_events ADD COLUMN IF NOT EXISTS kafka_timestamp DateTime64(3, 'UTC') DEFAULT ingested_at AFTER kafka_offset;

-- Resent events (same event_id) dropped by ingest, kept for the duplicate rate
-- per source system. Keyed by Kafka position, so a redelivery is stored once.
CREATE TABLE IF NOT EXISTS {db}.duplicates
(
    source_topic     LowCardinality(String),
    kafka_partition  UInt16,
    kafka_offset     UInt64,
    kafka_timestamp  DateTime64(3, 'UTC'),
    event_id         String,
    event_time       DateTime64(3, 'UTC'),
    source_system    LowCardinality(String),
    received_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(kafka_timestamp)
ORDER BY (source_topic, kafka_partition, kafka_offset)
TTL toDateTime(kafka_timestamp) + INTERVAL {dead_letter_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Current state of every ticket: one row per ticket, the newest version wins
-- (ReplacingMergeTree on updated_at; read with FINAL). Not partitioned, so the
-- versions of one ticket always meet in a merge. Lifecycle data-quality findings
-- travel with the state, so a finding cleared by a late event disappears too.
CREATE TABLE IF NOT EXISTS {db}.ticket_state
(
    ticket_id                 String,
    customer_id               String,
    province                  LowCardinality(String),
    city                      LowCardinality(String),
    district                  LowCardinality(String),
    channel                   LowCardinality(String),
    business_line             LowCardinality(String),
    complaint_category        LowCardinality(String),
    complaint_phenomenon      LowCardinality(String),
    customer_tier             LowCardinality(String),
    status                    LowCardinality(String),
    created_at                Nullable(DateTime64(3, 'UTC')),
    first_closed_at           Nullable(DateTime64(3, 'UTC')),
    closed_at                 Nullable(DateTime64(3, 'UTC')),
    last_event_time           DateTime64(3, 'UTC'),
    holder_department         LowCardinality(String),
    departments               Array(LowCardinality(String)),
    handoffs                  UInt16,
    handling_s                Nullable(Float64),
    sla_deadline              Nullable(DateTime64(3, 'UTC')),
    sla_breached              Bool,
    sla_breach                LowCardinality(String),
    reopen_count              UInt16,
    first_contact_resolution  Nullable(Bool),
    closure_type              LowCardinality(String),
    problem_location          LowCardinality(String),
    followup_event_id         String,
    followup_time             Nullable(DateTime64(3, 'UTC')),
    followup_score            Nullable(UInt8),
    followup_nps              Nullable(UInt8),
    internally_resolved       Nullable(Bool),
    customer_solved           Nullable(Bool),
    perception_gap            Nullable(Bool),
    finding_kinds             Array(LowCardinality(String)),
    finding_event_ids         Array(String),
    finding_sources           Array(LowCardinality(String)),
    finding_details           Array(String),
    steps                     UInt16,
    version                   UInt32,
    updated_at                DateTime64(3, 'UTC'),
    INDEX idx_district district TYPE set(0) GRANULARITY 4,
    INDEX idx_customer customer_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY ticket_id
TTL toDateTime(last_event_time) + INTERVAL {raw_ttl_days} DAY;

-- Each lifecycle step with what the stream derived for it: who held the ticket
-- after it, how long until the next step, whether the SLA was crossed there.
-- Rewritten for a ticket whenever a step (possibly a late one) changes its story.
CREATE TABLE IF NOT EXISTS {db}.ticket_steps
(
    ticket_id      String,
    event_id       String,
    step_index     UInt16,
    event_time     DateTime64(3, 'UTC'),
    step           LowCardinality(String),
    source_system  LowCardinality(String),
    department     LowCardinality(String),
    holder         LowCardinality(String),
    dwell_s        Nullable(Float64),
    sla_breach     Bool,
    closure_type   LowCardinality(String),
    district       LowCardinality(String),
    updated_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (ticket_id, event_id)
TTL toDateTime(event_time) + INTERVAL {raw_ttl_days} DAY;
