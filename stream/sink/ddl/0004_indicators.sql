-- Indicator counters per window and base cell, one row per WRITER (a worker
-- process): each worker aggregates the events of its partitions, per batch, and
-- writes its partial counters; a cell's value and every roll-up (district totals,
-- city, province, network, all channels) is an exact SUM over writers
-- (docs/indicators.md). The newest version of a writer's partial wins (a late
-- event re-emits it). Partials are additive, so a restart or a rebalance needs
-- no hand-over: the new writer starts from zero and the sums stay exact.
CREATE TABLE IF NOT EXISTS {db}.indicator_cells
(
    window            LowCardinality(String),
    window_start      DateTime('UTC'),
    window_end        DateTime('UTC'),
    province          LowCardinality(String),
    city              LowCardinality(String),
    district          LowCardinality(String),
    channel           LowCardinality(String),
    business_line     LowCardinality(String),
    writer            UInt64,
    complaints             Float64,
    sat_n                  Float64,
    sat_sum                Float64,
    sat_sumsq              Float64,
    satisfied_n            Float64,
    nps_n                  Float64,
    promoters_n            Float64,
    detractors_n           Float64,
    dim_overall_service_n  Float64,
    dim_overall_service_sum Float64,
    dim_reach_speed_n      Float64,
    dim_reach_speed_sum    Float64,
    dim_ivr_menu_n         Float64,
    dim_ivr_menu_sum       Float64,
    dim_agent_attitude_n   Float64,
    dim_agent_attitude_sum Float64,
    dim_agent_ability_n    Float64,
    dim_agent_ability_sum  Float64,
    dim_call_outcome_n     Float64,
    dim_call_outcome_sum   Float64,
    closed_n               Float64,
    handling_n             Float64,
    handling_sum           Float64,
    fcr_n                  Float64,
    resolved_n             Float64,
    first_closed_n         Float64,
    reopened_n             Float64,
    due_n                  Float64,
    overdue_n              Float64,
    verdict_n              Float64,
    gap_n                  Float64,
    ontime_verdict_n       Float64,
    perceived_slow_n       Float64,
    version           UInt64,
    updated_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window, window_start, province, city, district, channel, business_line, writer)
TTL window_start + INTERVAL {raw_ttl_days} DAY;

-- Facts that arrived after their window closed (window end + lateness behind the
-- newest event time): counted and kept here, not applied to the final value.
CREATE TABLE IF NOT EXISTS {db}.indicator_too_late
(
    event_id          String,
    source            LowCardinality(String),
    fact_time         DateTime64(3, 'UTC'),
    window            LowCardinality(String),
    window_start      DateTime('UTC'),
    district          LowCardinality(String),
    watermark         DateTime64(3, 'UTC'),
    recorded_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window, window_start, district, event_id)
TTL window_start + INTERVAL {raw_ttl_days} DAY;

-- Subscriber base per district (reference data from cx.subscriber-base.v1); a
-- new base applies from its effective_from on (ASOF join by window start).
CREATE TABLE IF NOT EXISTS {db}.subscriber_base
(
    district        LowCardinality(String),
    city            LowCardinality(String),
    province        LowCardinality(String),
    subscribers     UInt64,
    effective_from  DateTime('UTC'),
    updated_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (district, effective_from);

-- Base cells merged over writers, with the indicators (docs/indicators.md).
-- Roll-ups: sum the counters with GROUP BY over this view's columns, then apply the same formulas.
CREATE VIEW IF NOT EXISTS {db}.indicator_values AS
WITH merged AS
(
    SELECT window, window_start, window_end, province, city, district, channel, business_line,
    sum(complaints) AS complaints,
    sum(sat_n) AS sat_n,
    sum(sat_sum) AS sat_sum,
    sum(sat_sumsq) AS sat_sumsq,
    sum(satisfied_n) AS satisfied_n,
    sum(nps_n) AS nps_n,
    sum(promoters_n) AS promoters_n,
    sum(detractors_n) AS detractors_n,
    sum(dim_overall_service_n) AS dim_overall_service_n,
    sum(dim_overall_service_sum) AS dim_overall_service_sum,
    sum(dim_reach_speed_n) AS dim_reach_speed_n,
    sum(dim_reach_speed_sum) AS dim_reach_speed_sum,
    sum(dim_ivr_menu_n) AS dim_ivr_menu_n,
    sum(dim_ivr_menu_sum) AS dim_ivr_menu_sum,
    sum(dim_agent_attitude_n) AS dim_agent_attitude_n,
    sum(dim_agent_attitude_sum) AS dim_agent_attitude_sum,
    sum(dim_agent_ability_n) AS dim_agent_ability_n,
    sum(dim_agent_ability_sum) AS dim_agent_ability_sum,
    sum(dim_call_outcome_n) AS dim_call_outcome_n,
    sum(dim_call_outcome_sum) AS dim_call_outcome_sum,
    sum(closed_n) AS closed_n,
    sum(handling_n) AS handling_n,
    sum(handling_sum) AS handling_sum,
    sum(fcr_n) AS fcr_n,
    sum(resolved_n) AS resolved_n,
    sum(first_closed_n) AS first_closed_n,
    sum(reopened_n) AS reopened_n,
    sum(due_n) AS due_n,
    sum(overdue_n) AS overdue_n,
    sum(verdict_n) AS verdict_n,
    sum(gap_n) AS gap_n,
    sum(ontime_verdict_n) AS ontime_verdict_n,
    sum(perceived_slow_n) AS perceived_slow_n
    FROM {db}.indicator_cells FINAL
    GROUP BY window, window_start, window_end, province, city, district, channel, business_line
)
SELECT
    m.*,
    b.subscribers AS subscribers,
    if(b.subscribers > 0, complaints / b.subscribers * 10000, NULL) AS complaint_rate_per_10k,
    if(sat_n > 0, sat_sum / sat_n, NULL) AS sat_mean,
    if(sat_n > 0, sqrt(greatest(sat_sumsq / sat_n - pow(sat_sum / sat_n, 2), 0)), NULL) AS sat_std,
    if(sat_n > 0, satisfied_n / sat_n, NULL) AS csat,
    if(nps_n > 0, 100 * (promoters_n - detractors_n) / nps_n, NULL) AS nps,
    if(dim_overall_service_n > 0, dim_overall_service_sum / dim_overall_service_n, NULL) AS dim_overall_service_mean,
    if(dim_reach_speed_n > 0, dim_reach_speed_sum / dim_reach_speed_n, NULL) AS dim_reach_speed_mean,
    if(dim_ivr_menu_n > 0, dim_ivr_menu_sum / dim_ivr_menu_n, NULL) AS dim_ivr_menu_mean,
    if(dim_agent_attitude_n > 0, dim_agent_attitude_sum / dim_agent_attitude_n, NULL) AS dim_agent_attitude_mean,
    if(dim_agent_ability_n > 0, dim_agent_ability_sum / dim_agent_ability_n, NULL) AS dim_agent_ability_mean,
    if(dim_call_outcome_n > 0, dim_call_outcome_sum / dim_call_outcome_n, NULL) AS dim_call_outcome_mean,
    if(handling_n > 0, handling_sum / handling_n, NULL) AS avg_handling_s,
    if(due_n > 0, overdue_n / due_n, NULL) AS sla_overdue_rate,
    if(closed_n > 0, fcr_n / closed_n, NULL) AS fcr_rate,
    if(first_closed_n > 0, reopened_n / first_closed_n, NULL) AS reopen_rate,
    if(verdict_n > 0, gap_n / verdict_n, NULL) AS perception_gap_rate,
    if(ontime_verdict_n > 0, perceived_slow_n / ontime_verdict_n, NULL) AS perceived_slow_rate
FROM merged AS m
ASOF LEFT JOIN (SELECT district, subscribers, effective_from FROM {db}.subscriber_base FINAL) AS b
    ON m.district = b.district AND m.window_start >= b.effective_from;
