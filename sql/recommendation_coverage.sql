-- recommendation_coverage: how much of the catalog one scoring run's lists reach, and how evenly.
--
-- Answers: for the lists written for :run_date, one row: how many users got a list and how
-- long the lists are, how many distinct items were recommended, which share of the catalog
-- and of its long tail that is, and how unequally the recommendations spread over the catalog
-- (Gini coefficient). One row even when the run date has no lists (counts 0, the rest null).
--
-- Parameters (passed as strings, cast below):
--   :run_date    the scoring run's date, YYYY-MM-DD (no default)
--   :head_share  share of the catalog that is the popular head; the rest is the long tail
-- param head_share=0.2
--
-- Reads: recommendations (the run_date partition), items (the catalog: every item_id in it,
-- available or not) and item_features (popularity, the as_of_date = :run_date slice).
--
-- Definitions:
--   long tail  rank the catalog items by item_features.popularity as of :run_date (highest
--              first; an item without a feature row counts as 0; ties go to the smaller
--              item_id); the head is the first ceil(:head_share * catalog_items) of them, the
--              tail is every other catalog item. With the default 0.2 that is "outside the top
--              20% by popularity". Tail columns are null when item_features has no slice for
--              :run_date (the ranking would be arbitrary).
--   Gini       over the catalog's items, each with its number of recommendation rows (0 when
--              never recommended), sorted ascending x_1..x_n:
--              G = 2 * sum(i * x_i) / (n * sum(x)) - (n + 1) / n;
--              0 = every catalog item recommended equally often, (n - 1) / n = every
--              recommendation is of one item. Recommended items missing from the catalog do
--              not count here (see items_outside_catalog).
--
-- Columns:
--   run_date               DATE    the run's date (:run_date)
--   users                  BIGINT  distinct users with a list
--   min_list_length        BIGINT  fewest items in one user's list (null when no lists)
--   max_list_length        BIGINT  most items in one user's list (null when no lists)
--   recommendations        BIGINT  recommendation rows (user, rank) of the run
--   distinct_items         BIGINT  distinct items recommended, in the catalog or not
--   items_outside_catalog  BIGINT  distinct recommended items missing from the items table
--   catalog_items          BIGINT  distinct item_ids in the items table
--   catalog_coverage       DOUBLE  recommended catalog items / catalog_items, 4 decimals
--   tail_items             BIGINT  catalog items in the long tail (definition above)
--   tail_coverage          DOUBLE  tail items recommended at least once / tail_items, 4 decimals
--   tail_rec_share         DOUBLE  share of all recommendation rows that are tail items,
--                                  4 decimals
--   gini                   DOUBLE  Gini coefficient of recommendation counts over the catalog
--                                  (definition above), 4 decimals; null when no catalog item
--                                  was recommended
--   model_version          STRING  model version that scored the run (several, sorted and
--                                  comma-separated, would mean a mixed partition)
--   score_id               STRING  content key of the scoring run (same convention)

WITH recs AS (
    SELECT user_id, item_id, model_version, score_id
    FROM recommendations
    WHERE run_date = CAST(:run_date AS DATE)
),
catalog AS (
    SELECT DISTINCT item_id FROM items
),
popularity AS (
    SELECT item_id, popularity
    FROM item_features
    WHERE as_of_date = CAST(:run_date AS DATE)
),
item_counts AS (
    SELECT item_id, count(*) AS n
    FROM recs
    GROUP BY item_id
),
list_stats AS (
    SELECT min(n) AS min_list_length, max(n) AS max_list_length
    FROM (SELECT user_id, count(*) AS n FROM recs GROUP BY user_id)
),
run_stats AS (
    SELECT
        count(DISTINCT user_id) AS users,
        count(*) AS recommendations,
        count(DISTINCT item_id) AS distinct_items,
        nullif(array_join(array_sort(collect_set(model_version)), ', '), '') AS model_version,
        nullif(array_join(array_sort(collect_set(score_id)), ', '), '') AS score_id
    FROM recs
),
outside AS (
    SELECT count(*) AS items_outside_catalog
    FROM item_counts AS ic
    LEFT ANTI JOIN catalog AS c ON c.item_id = ic.item_id
),
ranked_catalog AS (
    -- every catalog item, its recommendation count, its place by popularity and by count
    SELECT
        c.item_id,
        coalesce(ic.n, 0) AS n,
        row_number() OVER (ORDER BY coalesce(p.popularity, 0.0) DESC, c.item_id) AS popularity_rank,
        row_number() OVER (ORDER BY coalesce(ic.n, 0), c.item_id) AS count_rank,
        count(*) OVER () AS catalog_size
    FROM catalog AS c
    LEFT JOIN item_counts AS ic ON ic.item_id = c.item_id
    LEFT JOIN popularity AS p ON p.item_id = c.item_id
),
catalog_stats AS (
    SELECT
        count(*) AS catalog_items,
        count_if(n > 0) AS recommended_catalog_items,
        count_if(is_tail) AS tail_items,
        count_if(is_tail AND n > 0) AS tail_recommended,
        coalesce(sum(CASE WHEN is_tail THEN n ELSE 0 END), 0) AS tail_rows,
        coalesce(sum(n), 0) AS catalog_rows,
        coalesce(sum(count_rank * n), 0) AS weighted_rows
    FROM (
        SELECT *, popularity_rank > ceil(CAST(:head_share AS DOUBLE) * catalog_size) AS is_tail
        FROM ranked_catalog
    )
),
features_present AS (
    SELECT count(*) > 0 AS present FROM popularity
)
SELECT
    CAST(:run_date AS DATE) AS run_date,
    r.users,
    l.min_list_length,
    l.max_list_length,
    r.recommendations,
    r.distinct_items,
    o.items_outside_catalog,
    c.catalog_items,
    round(c.recommended_catalog_items / nullif(c.catalog_items, 0), 4) AS catalog_coverage,
    CASE WHEN f.present THEN c.tail_items END AS tail_items,
    CASE WHEN f.present THEN round(c.tail_recommended / nullif(c.tail_items, 0), 4) END AS tail_coverage,
    CASE WHEN f.present THEN round(c.tail_rows / nullif(r.recommendations, 0), 4) END AS tail_rec_share,
    round(2.0D * c.weighted_rows / nullif(c.catalog_items * c.catalog_rows, 0)
          - (c.catalog_items + 1.0D) / nullif(c.catalog_items, 0), 4) AS gini,
    r.model_version,
    r.score_id
FROM run_stats AS r
CROSS JOIN list_stats AS l
CROSS JOIN outside AS o
CROSS JOIN catalog_stats AS c
CROSS JOIN features_present AS f
