-- recommendation_diversity: how many catalog categories one scoring run's lists mix.
--
-- Answers: for the lists written for :run_date, per kind of list, how many distinct categories
-- a list spans (mean, 10th percentile, median, 90th percentile), how much of a list its
-- biggest category takes on average, and how often one category takes more than half a list.
-- Always three rows, in this order (lists = 0 and the rest null when a kind has no lists):
--   'user lists'      recommendations: one list per user_id
--   'similar items'   similar_items: one list per anchor item_id, over its similar_item_ids
--                     (the anchor itself is not part of its list)
--   'fallback lists'  fallback_lists: the served lists only ('global' and 'segment:<country>'),
--                     not the raw popular:* / trending:* inputs they are blended from
--
-- Parameters (passed as strings, cast below):
--   :run_date  the scoring run's date, YYYY-MM-DD (no default)
--
-- Reads: recommendations, similar_items, fallback_lists (each its run_date partition) and
-- items (category). An item missing from the catalog, or without a category, counts as the
-- category 'unknown' (so two such items in one list count as one category).
-- Percentiles are exact, interpolated between the sorted per-list counts (Spark's
-- percentile), so a value such as 2.7 means "between 2 and 3".
--
-- Columns:
--   list_kind               STRING  'user lists' / 'similar items' / 'fallback lists'
--   lists                   BIGINT  lists of that kind in the run
--   avg_list_length         DOUBLE  mean items per list, 2 decimals
--   avg_categories          DOUBLE  mean distinct categories per list, 2 decimals
--   p10_categories          DOUBLE  10th percentile of distinct categories per list, 2 decimals
--   median_categories       DOUBLE  median of distinct categories per list, 2 decimals
--   p90_categories          DOUBLE  90th percentile of distinct categories per list, 2 decimals
--   avg_max_category_share  DOUBLE  mean over lists of (items of the list's biggest category /
--                                   items in the list), 4 decimals; 1 = single-category lists
--   dominated_share         DOUBLE  share of lists where one category holds more than half of
--                                   the items (exactly half is not dominated), 4 decimals

WITH entries AS (
    SELECT 'user lists' AS list_kind, user_id AS list_id, item_id
    FROM recommendations
    WHERE run_date = CAST(:run_date AS DATE)
    UNION ALL
    SELECT 'similar items', item_id, similar_item_id
    FROM similar_items
    WHERE run_date = CAST(:run_date AS DATE)
    UNION ALL
    SELECT 'fallback lists', list_name, item_id
    FROM fallback_lists
    WHERE run_date = CAST(:run_date AS DATE)
      AND (list_name = 'global' OR list_name LIKE 'segment:%')
),
per_category AS (
    SELECT e.list_kind, e.list_id, coalesce(i.category, 'unknown') AS category, count(*) AS n
    FROM entries AS e
    LEFT JOIN items AS i ON i.item_id = e.item_id
    GROUP BY e.list_kind, e.list_id, coalesce(i.category, 'unknown')
),
per_list AS (
    SELECT
        list_kind,
        list_id,
        sum(n) AS list_length,
        count(*) AS categories,
        max(n) / sum(n) AS max_category_share,
        2 * max(n) > sum(n) AS dominated
    FROM per_category
    GROUP BY list_kind, list_id
),
per_kind AS (
    SELECT
        list_kind,
        count(*) AS lists,
        avg(list_length) AS avg_list_length,
        avg(categories) AS avg_categories,
        percentile(categories, array(0.1, 0.5, 0.9)) AS pct,
        avg(max_category_share) AS avg_max_category_share,
        avg(CASE WHEN dominated THEN 1.0D ELSE 0.0D END) AS dominated_share
    FROM per_list
    GROUP BY list_kind
),
kinds AS (
    SELECT * FROM VALUES ('user lists', 1), ('similar items', 2), ('fallback lists', 3) AS k(list_kind, ord)
)
SELECT
    k.list_kind,
    coalesce(p.lists, 0) AS lists,
    round(p.avg_list_length, 2) AS avg_list_length,
    round(p.avg_categories, 2) AS avg_categories,
    round(p.pct[0], 2) AS p10_categories,
    round(p.pct[1], 2) AS median_categories,
    round(p.pct[2], 2) AS p90_categories,
    round(p.avg_max_category_share, 4) AS avg_max_category_share,
    round(p.dominated_share, 4) AS dominated_share
FROM kinds AS k
LEFT JOIN per_kind AS p ON p.list_kind = k.list_kind
ORDER BY k.ord
