-- item_trends: the items gaining traction fastest.
--
-- Answers: the :n items of item_features as of :run_date with the highest trend, among those
-- with at least :min_popularity popularity in the short window, so that a single view of a
-- quiet item does not top the list.
--
-- Parameters (passed as strings, cast below):
--   :run_date        the as_of_date of the item_features slice to read, YYYY-MM-DD (no default)
--   :min_popularity  smallest popularity_7d an item needs (graded strength: a purchase is 1.0,
--                    a cart 0.6, a view 0.3; so 5 = five purchases or about 17 views in 7 days)
--   :n               how many items to return
-- param min_popularity=5
-- param n=20
--
-- Reads: item_features. Its window columns are named after conf features.short_window_days
-- and long_window_days; this query assumes the defaults 7 and 30 (popularity_7d,
-- popularity_30d). trend = (popularity_7d / 7) / (popularity_30d / 30): 1 is steady, above 1
-- rising; an item whose whole 30-day activity falls in the last 7 days gets the most there
-- is, 30 / 7 = 4.29, so brand-new items come first.
--
-- Columns:
--   rank            INT      1 = highest trend (ties: higher popularity_7d, then item_id)
--   item_id         STRING   product id as the source spells it
--   title           STRING   catalog title (null when the item is not in the catalog)
--   category        STRING   catalog category ('unknown' when not known)
--   available       BOOLEAN  whether the catalog says the item can be bought
--   trend           DOUBLE   short-window velocity over long-window velocity, 3 decimals
--   popularity_7d   DOUBLE   sum of interaction strengths in the 7 days up to run_date
--   popularity_30d  DOUBLE   the same over 30 days
--   popularity      DOUBLE   the same over all time up to run_date
--   n_users         BIGINT   distinct non-anonymous users who ever interacted with the item

WITH candidates AS (
    SELECT
        *,
        row_number() OVER (ORDER BY trend DESC, popularity_7d DESC, item_id) AS rank
    FROM item_features
    WHERE as_of_date = CAST(:run_date AS DATE)
      AND trend IS NOT NULL
      AND popularity_7d >= CAST(:min_popularity AS DOUBLE)
)
SELECT
    rank,
    item_id,
    title,
    category,
    available,
    round(trend, 3) AS trend,
    popularity_7d,
    popularity_30d,
    popularity,
    n_users
FROM candidates
WHERE rank <= CAST(:n AS INT)
ORDER BY rank
