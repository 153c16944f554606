-- recommendation_sources: where one scoring run's recommendations come from, per customer segment.
--
-- Answers: for the lists written for :run_date, per source (personal, buy_again, trending,
-- popular, explore, pinned, backfill) how many list positions it fills, how many users it
-- reaches, how high it ranks and how often it takes the top slot; once over all users
-- (activity_segment = '(all)', listed first) and once per activity segment.
--
-- Shape: one row per (activity_segment, source) that has at least one row, plus the
-- '(all)' rollup per source (GROUPING SETS). Shares are within the row's segment: in each
-- segment, recommendation_share and rank1_share each add up to 1 over its sources.
--
-- Parameters (passed as strings, cast below):
--   :run_date  the scoring run's date, YYYY-MM-DD (no default); also the as_of_date of the
--              user_features slice that gives each user's segment
--
-- Reads: recommendations (the run_date partition) and user_features (as_of_date =
-- :run_date). Segments: new / active / lapsing / dormant (see features/user_features.py);
-- a user with no user_features row for that date is in '(unknown)'.
--
-- Columns:
--   activity_segment      STRING  '(all)', then new / active / lapsing / dormant / (unknown)
--   source                STRING  where the item came from (rows in the order listed above;
--                                 any other source after them, by name)
--   recommendations       BIGINT  list positions (user, rank) the source fills in the segment
--   recommendation_share  DOUBLE  recommendations / all the segment's list positions,
--                                 4 decimals
--   users_reached         BIGINT  distinct users of the segment with at least one item from
--                                 the source
--   user_share            DOUBLE  users_reached / users of the segment with a list, 4 decimals
--   avg_rank              DOUBLE  mean rank (1 = top) of the source's positions, 2 decimals
--   rank1_share           DOUBLE  share of the segment's rank-1 positions (one per list) the
--                                 source holds, 4 decimals

WITH recs AS (
    SELECT
        r.user_id,
        r.rank,
        r.source,
        coalesce(u.activity_segment, '(unknown)') AS activity_segment
    FROM recommendations AS r
    LEFT JOIN (
        SELECT user_id, activity_segment
        FROM user_features
        WHERE as_of_date = CAST(:run_date AS DATE)
    ) AS u ON u.user_id = r.user_id
    WHERE r.run_date = CAST(:run_date AS DATE)
),
by_source AS (
    SELECT
        CASE WHEN grouping(activity_segment) = 1 THEN '(all)' ELSE activity_segment END AS activity_segment,
        source,
        count(*) AS recommendations,
        count(DISTINCT user_id) AS users_reached,
        avg(rank) AS avg_rank,
        count_if(rank = 1) AS rank1_positions
    FROM recs
    GROUP BY GROUPING SETS ((source), (activity_segment, source))
),
segments AS (
    SELECT
        CASE WHEN grouping(activity_segment) = 1 THEN '(all)' ELSE activity_segment END AS activity_segment,
        count(*) AS recommendations,
        count(DISTINCT user_id) AS users,
        count_if(rank = 1) AS rank1_positions
    FROM recs
    GROUP BY GROUPING SETS ((), (activity_segment))
)
SELECT
    b.activity_segment,
    b.source,
    b.recommendations,
    round(b.recommendations / s.recommendations, 4) AS recommendation_share,
    b.users_reached,
    round(b.users_reached / s.users, 4) AS user_share,
    round(b.avg_rank, 2) AS avg_rank,
    round(b.rank1_positions / nullif(s.rank1_positions, 0), 4) AS rank1_share
FROM by_source AS b
JOIN segments AS s ON s.activity_segment = b.activity_segment
ORDER BY
    CASE b.activity_segment WHEN '(all)' THEN 0 WHEN 'new' THEN 1 WHEN 'active' THEN 2
                            WHEN 'lapsing' THEN 3 WHEN 'dormant' THEN 4 WHEN '(unknown)' THEN 6
                            ELSE 5 END,
    b.activity_segment,
    CASE b.source WHEN 'personal' THEN 1 WHEN 'buy_again' THEN 2 WHEN 'trending' THEN 3
                  WHEN 'popular' THEN 4 WHEN 'explore' THEN 5 WHEN 'pinned' THEN 6
                  WHEN 'backfill' THEN 7 ELSE 8 END,
    b.source
