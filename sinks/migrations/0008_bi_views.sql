-- What a BI tool may read (issue 21): on a ClickHouse server the read-only `bi` user is granted
-- SELECT on these views alone (docker/clickhouse/users.xml), never on the tables behind them:
-- `events`, `alerts` and `message_responses` hold patient pseudonyms, and the rollup tables
-- hold one row per patient key.
--
-- So the views run with the rights of their definer, the user that ran this migration (the
-- migration user on a server; chDB has one user and ignores the difference): SQL SECURITY
-- DEFINER. A later migration that replaces one of them must say SQL SECURITY DEFINER again,
-- since CREATE OR REPLACE VIEW otherwise makes it INVOKER (tests/unit/sinks/test_bi_views.py).
--
-- The materialized views get the same, explicitly: they then write the rollup tables with the
-- migration user's rights, so the pipeline's runtime user needs INSERT on the base tables only.
-- (Created without the clause, a server gives them DEFINER = their creator, but one attached
-- from old metadata gets SQL SECURITY NONE.)

-- Open alerts per practice, kind and staff pool: the counts only, no pseudonym or subject.
CREATE OR REPLACE VIEW open_alerts_by_pool
DEFINER = CURRENT_USER SQL SECURITY DEFINER
AS SELECT
    practice_id,
    kind,
    ifNull(staff_pool, '') AS staff_pool,
    count() AS open
FROM alerts FINAL
WHERE resolved_at IS NULL
GROUP BY practice_id, kind, staff_pool;

ALTER TABLE monthly_portal_performance MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE live_portal_metrics MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;

ALTER TABLE events_rollup_feed_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE events_rollup_local_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE rollup_months_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE rollup_patient_years_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE rollup_patient_firsts_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE rollup_results_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE message_responses_rollup_feed_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE alerts_rollup_feed_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE rollup_sla_responses_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
ALTER TABLE rollup_sla_breaches_mv MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER;
