-- Raw events are written as they arrived: the validated JSON plus the few
-- fields the worker already holds (ids as validated, times as epoch ms) and
-- where Kafka had them. ClickHouse parses the rest into ticket_events and
-- satisfaction_events through a materialized view, in its own threads, so the
-- worker's Python does not build twenty columns per event (issue 8: it was
-- ~3 us of every event's budget). The inbox tables keep nothing (Null engine);
-- the target tables and their deduplication are unchanged.
--
-- Only events that passed the pydantic contract come here, so every field has
-- the type the contract says. Identifiers come from Python because the
-- contract trims them; times because Python already holds them.
CREATE TABLE IF NOT EXISTS {db}.ticket_events_inbox
(
    event_id         String,
    event_time       DateTime64(3, 'UTC'),
    customer_id      String,
    ticket_id        String,
    sla_deadline     Nullable(DateTime64(3, 'UTC')),
    value            String,
    kafka_partition  UInt16,
    kafka_offset     UInt64,
    kafka_timestamp  DateTime64(3, 'UTC'),
    ingested_at      DateTime64(3, 'UTC')
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ticket_events_inbox_mv TO {db}.ticket_events AS
SELECT
    event_id,
    event_time,
    JSONExtractString(value, 'source_system')             AS source_system,
    customer_id,
    ticket_id,
    JSONExtractString(value, 'step')                      AS step,
    JSONExtractString(value, 'region', 'province')        AS province,
    JSONExtractString(value, 'region', 'city')            AS city,
    JSONExtractString(value, 'region', 'district')        AS district,
    JSONExtractString(value, 'channel')                   AS channel,
    JSONExtractString(value, 'business_line')             AS business_line,
    JSONExtractString(value, 'complaint_category')        AS complaint_category,
    JSONExtractString(value, 'complaint_phenomenon')      AS complaint_phenomenon,
    JSONExtractString(value, 'customer_tier')             AS customer_tier,
    JSONExtractString(value, 'department')                AS department,
    JSONExtractString(value, 'problem_location')          AS problem_location,
    JSONExtractString(value, 'closure_type')              AS closure_type,
    sla_deadline,
    JSONExtractString(value, 'note')                      AS note,
    toUInt8(JSONExtractUInt(value, 'schema_version'))     AS schema_version,
    kafka_partition,
    kafka_offset,
    kafka_timestamp,
    ingested_at
FROM {db}.ticket_events_inbox;

CREATE TABLE IF NOT EXISTS {db}.satisfaction_events_inbox
(
    event_id         String,
    event_time       DateTime64(3, 'UTC'),
    customer_id      String,
    contact_id       String,
    ticket_id        String,
    value            String,
    kafka_partition  UInt16,
    kafka_offset     UInt64,
    kafka_timestamp  DateTime64(3, 'UTC'),
    ingested_at      DateTime64(3, 'UTC')
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.satisfaction_events_inbox_mv TO {db}.satisfaction_events AS
SELECT
    event_id,
    event_time,
    JSONExtractString(value, 'source_system')                                   AS source_system,
    customer_id,
    contact_id,
    ticket_id,
    JSONExtractString(value, 'channel')                                         AS channel,
    JSONExtractString(value, 'region', 'province')                              AS province,
    JSONExtractString(value, 'region', 'city')                                  AS city,
    JSONExtractString(value, 'region', 'district')                              AS district,
    JSONExtractString(value, 'business_line')                                   AS business_line,
    JSONExtractString(value, 'customer_tier')                                   AS customer_tier,
    JSONExtractString(value, 'plan')                                            AS plan,
    toUInt8(JSONExtractUInt(value, 'overall_score'))                            AS overall_score,
    JSONExtract(value, 'dimensions', 'overall_service', 'Nullable(UInt8)')      AS dim_overall_service,
    JSONExtract(value, 'dimensions', 'reach_speed', 'Nullable(UInt8)')          AS dim_reach_speed,
    JSONExtract(value, 'dimensions', 'ivr_menu', 'Nullable(UInt8)')             AS dim_ivr_menu,
    JSONExtract(value, 'dimensions', 'agent_attitude', 'Nullable(UInt8)')       AS dim_agent_attitude,
    JSONExtract(value, 'dimensions', 'agent_ability', 'Nullable(UInt8)')        AS dim_agent_ability,
    JSONExtract(value, 'dimensions', 'call_outcome', 'Nullable(UInt8)')         AS dim_call_outcome,
    JSONExtract(value, 'nps', 'Nullable(UInt8)')                                AS nps,
    JSONExtract(value, 'problem_solved', 'Nullable(Bool)')                      AS problem_solved,
    toUInt8(JSONExtractUInt(value, 'schema_version'))                           AS schema_version,
    kafka_partition,
    kafka_offset,
    kafka_timestamp,
    ingested_at
FROM {db}.satisfaction_events_inbox;
