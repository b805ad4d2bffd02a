-- Indicators rolled up from the base cells to district totals (all channels and
-- business lines), city, province and the whole network: exact sums of counters,
-- then the formulas of docs/indicators.md. The complaint rate's denominator is the
-- sum of the scope's district bases in force at the window start (every district
-- of the scope, also those without complaints). '*' marks a rolled-up field.
CREATE VIEW IF NOT EXISTS {db}.indicator_rollups AS
WITH
cells AS
(
    SELECT window, window_start, window_end, province, city, district, sum(complaints) AS complaints, sum(sat_n) AS sat_n, sum(sat_sum) AS sat_sum, sum(sat_sumsq) AS sat_sumsq, sum(satisfied_n) AS satisfied_n, sum(nps_n) AS nps_n, sum(promoters_n) AS promoters_n, sum(detractors_n) AS detractors_n, sum(dim_overall_service_n) AS dim_overall_service_n, sum(dim_overall_service_sum) AS dim_overall_service_sum, sum(dim_reach_speed_n) AS dim_reach_speed_n, sum(dim_reach_speed_sum) AS dim_reach_speed_sum, sum(dim_ivr_menu_n) AS dim_ivr_menu_n, sum(dim_ivr_menu_sum) AS dim_ivr_menu_sum, sum(dim_agent_attitude_n) AS dim_agent_attitude_n, sum(dim_agent_attitude_sum) AS dim_agent_attitude_sum, sum(dim_agent_ability_n) AS dim_agent_ability_n, sum(dim_agent_ability_sum) AS dim_agent_ability_sum, sum(dim_call_outcome_n) AS dim_call_outcome_n, sum(dim_call_outcome_sum) AS dim_call_outcome_sum, sum(closed_n) AS closed_n, sum(handling_n) AS handling_n, sum(handling_sum) AS handling_sum, sum(fcr_n) AS fcr_n, sum(resolved_n) AS resolved_n, sum(first_closed_n) AS first_closed_n, sum(reopened_n) AS reopened_n, sum(due_n) AS due_n, sum(overdue_n) AS overdue_n, sum(verdict_n) AS verdict_n, sum(gap_n) AS gap_n, sum(ontime_verdict_n) AS ontime_verdict_n, sum(perceived_slow_n) AS perceived_slow_n
    FROM {db}.indicator_cells FINAL
    GROUP BY window, window_start, window_end, province, city, district
),
rolled AS
(
    SELECT window, window_start, window_end, 'district' AS level, province AS province, city AS city, district AS district,
           sum(complaints) AS complaints, sum(sat_n) AS sat_n, sum(sat_sum) AS sat_sum, sum(sat_sumsq) AS sat_sumsq, sum(satisfied_n) AS satisfied_n, sum(nps_n) AS nps_n, sum(promoters_n) AS promoters_n, sum(detractors_n) AS detractors_n, sum(dim_overall_service_n) AS dim_overall_service_n, sum(dim_overall_service_sum) AS dim_overall_service_sum, sum(dim_reach_speed_n) AS dim_reach_speed_n, sum(dim_reach_speed_sum) AS dim_reach_speed_sum, sum(dim_ivr_menu_n) AS dim_ivr_menu_n, sum(dim_ivr_menu_sum) AS dim_ivr_menu_sum, sum(dim_agent_attitude_n) AS dim_agent_attitude_n, sum(dim_agent_attitude_sum) AS dim_agent_attitude_sum, sum(dim_agent_ability_n) AS dim_agent_ability_n, sum(dim_agent_ability_sum) AS dim_agent_ability_sum, sum(dim_call_outcome_n) AS dim_call_outcome_n, sum(dim_call_outcome_sum) AS dim_call_outcome_sum, sum(closed_n) AS closed_n, sum(handling_n) AS handling_n, sum(handling_sum) AS handling_sum, sum(fcr_n) AS fcr_n, sum(resolved_n) AS resolved_n, sum(first_closed_n) AS first_closed_n, sum(reopened_n) AS reopened_n, sum(due_n) AS due_n, sum(overdue_n) AS overdue_n, sum(verdict_n) AS verdict_n, sum(gap_n) AS gap_n, sum(ontime_verdict_n) AS ontime_verdict_n, sum(perceived_slow_n) AS perceived_slow_n
    FROM cells GROUP BY window, window_start, window_end, province, city, district
    UNION ALL
    SELECT window, window_start, window_end, 'city' AS level, province AS province, city AS city, '*' AS district,
           sum(complaints) AS complaints, sum(sat_n) AS sat_n, sum(sat_sum) AS sat_sum, sum(sat_sumsq) AS sat_sumsq, sum(satisfied_n) AS satisfied_n, sum(nps_n) AS nps_n, sum(promoters_n) AS promoters_n, sum(detractors_n) AS detractors_n, sum(dim_overall_service_n) AS dim_overall_service_n, sum(dim_overall_service_sum) AS dim_overall_service_sum, sum(dim_reach_speed_n) AS dim_reach_speed_n, sum(dim_reach_speed_sum) AS dim_reach_speed_sum, sum(dim_ivr_menu_n) AS dim_ivr_menu_n, sum(dim_ivr_menu_sum) AS dim_ivr_menu_sum, sum(dim_agent_attitude_n) AS dim_agent_attitude_n, sum(dim_agent_attitude_sum) AS dim_agent_attitude_sum, sum(dim_agent_ability_n) AS dim_agent_ability_n, sum(dim_agent_ability_sum) AS dim_agent_ability_sum, sum(dim_call_outcome_n) AS dim_call_outcome_n, sum(dim_call_outcome_sum) AS dim_call_outcome_sum, sum(closed_n) AS closed_n, sum(handling_n) AS handling_n, sum(handling_sum) AS handling_sum, sum(fcr_n) AS fcr_n, sum(resolved_n) AS resolved_n, sum(first_closed_n) AS first_closed_n, sum(reopened_n) AS reopened_n, sum(due_n) AS due_n, sum(overdue_n) AS overdue_n, sum(verdict_n) AS verdict_n, sum(gap_n) AS gap_n, sum(ontime_verdict_n) AS ontime_verdict_n, sum(perceived_slow_n) AS perceived_slow_n
    FROM cells GROUP BY window, window_start, window_end, province, city
    UNION ALL
    SELECT window, window_start, window_end, 'province' AS level, province AS province, '*' AS city, '*' AS district,
           sum(complaints) AS complaints, sum(sat_n) AS sat_n, sum(sat_sum) AS sat_sum, sum(sat_sumsq) AS sat_sumsq, sum(satisfied_n) AS satisfied_n, sum(nps_n) AS nps_n, sum(promoters_n) AS promoters_n, sum(detractors_n) AS detractors_n, sum(dim_overall_service_n) AS dim_overall_service_n, sum(dim_overall_service_sum) AS dim_overall_service_sum, sum(dim_reach_speed_n) AS dim_reach_speed_n, sum(dim_reach_speed_sum) AS dim_reach_speed_sum, sum(dim_ivr_menu_n) AS dim_ivr_menu_n, sum(dim_ivr_menu_sum) AS dim_ivr_menu_sum, sum(dim_agent_attitude_n) AS dim_agent_attitude_n, sum(dim_agent_attitude_sum) AS dim_agent_attitude_sum, sum(dim_agent_ability_n) AS dim_agent_ability_n, sum(dim_agent_ability_sum) AS dim_agent_ability_sum, sum(dim_call_outcome_n) AS dim_call_outcome_n, sum(dim_call_outcome_sum) AS dim_call_outcome_sum, sum(closed_n) AS closed_n, sum(handling_n) AS handling_n, sum(handling_sum) AS handling_sum, sum(fcr_n) AS fcr_n, sum(resolved_n) AS resolved_n, sum(first_closed_n) AS first_closed_n, sum(reopened_n) AS reopened_n, sum(due_n) AS due_n, sum(overdue_n) AS overdue_n, sum(verdict_n) AS verdict_n, sum(gap_n) AS gap_n, sum(ontime_verdict_n) AS ontime_verdict_n, sum(perceived_slow_n) AS perceived_slow_n
    FROM cells GROUP BY window, window_start, window_end, province
    UNION ALL
    SELECT window, window_start, window_end, 'network' AS level, '*' AS province, '*' AS city, '*' AS district,
           sum(complaints) AS complaints, sum(sat_n) AS sat_n, sum(sat_sum) AS sat_sum, sum(sat_sumsq) AS sat_sumsq, sum(satisfied_n) AS satisfied_n, sum(nps_n) AS nps_n, sum(promoters_n) AS promoters_n, sum(detractors_n) AS detractors_n, sum(dim_overall_service_n) AS dim_overall_service_n, sum(dim_overall_service_sum) AS dim_overall_service_sum, sum(dim_reach_speed_n) AS dim_reach_speed_n, sum(dim_reach_speed_sum) AS dim_reach_speed_sum, sum(dim_ivr_menu_n) AS dim_ivr_menu_n, sum(dim_ivr_menu_sum) AS dim_ivr_menu_sum, sum(dim_agent_attitude_n) AS dim_agent_attitude_n, sum(dim_agent_attitude_sum) AS dim_agent_attitude_sum, sum(dim_agent_ability_n) AS dim_agent_ability_n, sum(dim_agent_ability_sum) AS dim_agent_ability_sum, sum(dim_call_outcome_n) AS dim_call_outcome_n, sum(dim_call_outcome_sum) AS dim_call_outcome_sum, sum(closed_n) AS closed_n, sum(handling_n) AS handling_n, sum(handling_sum) AS handling_sum, sum(fcr_n) AS fcr_n, sum(resolved_n) AS resolved_n, sum(first_closed_n) AS first_closed_n, sum(reopened_n) AS reopened_n, sum(due_n) AS due_n, sum(overdue_n) AS overdue_n, sum(verdict_n) AS verdict_n, sum(gap_n) AS gap_n, sum(ontime_verdict_n) AS ontime_verdict_n, sum(perceived_slow_n) AS perceived_slow_n
    FROM cells GROUP BY window, window_start, window_end
),
district_bases AS
(
    SELECT s.window_start AS window_start, s.district AS district, b.province AS province, b.city AS city,
           b.subscribers AS subscribers
    FROM
    (
        SELECT window_start, district
        FROM (SELECT DISTINCT window_start FROM cells) AS t
        CROSS JOIN (SELECT DISTINCT district FROM {db}.subscriber_base) AS d
    ) AS s
    ASOF LEFT JOIN (SELECT district, province, city, subscribers, effective_from FROM {db}.subscriber_base FINAL) AS b
        ON s.district = b.district AND s.window_start >= b.effective_from
),
bases AS
(
    SELECT window_start, 'district' AS level, province, city, district, sum(subscribers) AS subscribers
    FROM district_bases GROUP BY window_start, province, city, district
    UNION ALL
    SELECT window_start, 'city', province, city, '*', sum(subscribers) FROM district_bases GROUP BY window_start, province, city
    UNION ALL
    SELECT window_start, 'province', province, '*', '*', sum(subscribers) FROM district_bases GROUP BY window_start, province
    UNION ALL
    SELECT window_start, 'network', '*', '*', '*', sum(subscribers) FROM district_bases GROUP BY window_start
)
SELECT
    r.*,
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
FROM rolled AS r
LEFT JOIN bases AS b
    ON r.window_start = b.window_start AND r.level = b.level AND r.province = b.province AND r.city = b.city
    AND r.district = b.district;
