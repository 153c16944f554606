-- data_quality: where every ingested row of every batch went, and why rows were set aside.
--
-- Answers: per source and batch (one row per ingest run in pipeline_runs), how many rows came
-- in, were accepted into silver, were excluded by a business rule, or were quarantined as bad;
-- the bad-row share the quality gate looks at; the most frequent quarantine reasons; and the
-- excluded rows by rule.
--
-- Parameters (passed as strings, cast below):
--   :top_reasons  how many quarantine reasons to list per batch
-- param top_reasons=3
--
-- Reads: pipeline_runs (step = 'ingest'), quarantine, excluded. pipeline_runs has a row per
-- (source, batch, run date); quarantine and excluded hold a batch's rows from its latest
-- ingest only, so a batch ingested under two run dates shows the same reasons on both rows.
--
-- Columns:
--   source                  STRING  source name from conf (sources.<name>)
--   batch_id                STRING  the batch (synthetic parameters, or a hash of its files)
--   run_date                DATE    the logical date the batch was ingested for
--   status                  STRING  succeeded / failed_quality_gate
--   input_rows              BIGINT  rows landed in bronze for the batch
--   accepted_rows           BIGINT  rows written to silver_interactions (0 when the gate failed)
--   excluded_rows           BIGINT  valid rows set aside by a business rule (table excluded)
--   quarantined_rows        BIGINT  rows that broke a quality rule (table quarantine)
--   unaccounted_rows        BIGINT  input - accepted - excluded - quarantined: 0 for a
--                                   succeeded run; for a failed one, the good rows not written
--   bad_share               DOUBLE  quarantined_rows / input_rows, rounded to 4 decimals; the
--                                   gate fails a batch above quality.max_bad_row_share
--   top_quarantine_reasons  STRING  'rule (rows); ...' for the :top_reasons most frequent first
--                                   rules (a row's first broken rule, detail after ':' cut),
--                                   most rows first, ties by name; null when nothing quarantined
--   excluded_by_rule        STRING  'rule (rows); ...' for every exclusion rule (non_product_item,
--                                   netted_by_return, return_netted, return_without_purchase),
--                                   most rows first; null when nothing excluded

WITH runs AS (
    SELECT source, batch_id, run_date, status, input_rows, accepted_rows, excluded_rows, quarantined_rows
    FROM pipeline_runs
    WHERE step = 'ingest'
),
quarantine_rules AS (
    SELECT
        source, batch_id, rule, n,
        row_number() OVER (PARTITION BY source, batch_id ORDER BY n DESC, rule) AS rk
    FROM (
        SELECT source, batch_id, trim(substring_index(first_rule, ':', 1)) AS rule, count(*) AS n
        FROM quarantine
        GROUP BY source, batch_id, trim(substring_index(first_rule, ':', 1))
    )
),
top_quarantine AS (
    SELECT
        source, batch_id,
        concat_ws('; ', transform(array_sort(collect_list(named_struct('rk', rk, 'label', concat(rule, ' (', n, ')')))),
                                  x -> x.label)) AS top_quarantine_reasons
    FROM quarantine_rules
    WHERE rk <= CAST(:top_reasons AS INT)
    GROUP BY source, batch_id
),
excluded_rules AS (
    SELECT
        source, batch_id,
        concat_ws('; ', transform(array_sort(collect_list(named_struct('neg_n', -n, 'rule', rule, 'n', n))),
                                  x -> concat(x.rule, ' (', x.n, ')'))) AS excluded_by_rule
    FROM (
        SELECT source, batch_id, rule, count(*) AS n
        FROM excluded
        GROUP BY source, batch_id, rule
    )
    GROUP BY source, batch_id
)
SELECT
    r.source,
    r.batch_id,
    r.run_date,
    r.status,
    r.input_rows,
    r.accepted_rows,
    r.excluded_rows,
    r.quarantined_rows,
    r.input_rows - r.accepted_rows - r.excluded_rows - r.quarantined_rows AS unaccounted_rows,
    CASE WHEN r.input_rows > 0 THEN round(r.quarantined_rows / r.input_rows, 4) ELSE 0.0 END AS bad_share,
    q.top_quarantine_reasons,
    e.excluded_by_rule
FROM runs AS r
LEFT JOIN top_quarantine AS q ON q.source = r.source AND q.batch_id = r.batch_id
LEFT JOIN excluded_rules AS e ON e.source = r.source AND e.batch_id = r.batch_id
ORDER BY r.run_date DESC, r.source, r.batch_id
