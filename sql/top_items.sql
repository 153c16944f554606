-- top_items: the best-selling items of a recent window.
--
-- Answers: the :n items with the most purchases in the :days days ending on :run_date
-- (both ends included), with their units, revenue, buyers, and title and category from the
-- catalog. Ties on purchases go to the higher revenue, then to the smaller item_id, so the
-- ranking is the same on every run.
--
-- Parameters (passed as strings, cast below):
--   :run_date  last day of the window, YYYY-MM-DD (no default)
--   :days      window length in days, counting run_date itself
--   :n         how many items to return
-- param days=30
-- param n=10
--
-- Reads: silver_interactions (all sources; purchases after netting returns, no non-product
-- lines) and items (the catalog).
--
-- Columns:
--   rank        INT     1 = most purchased
--   item_id     STRING  product id as the source spells it
--   title       STRING  catalog title; null when the item is not in the catalog
--   category    STRING  catalog category; 'unknown' when not known
--   purchases   BIGINT  purchase lines (one per item per order) in the window
--   units       DOUBLE  purchased quantity in the window, after netting returns
--   revenue     DOUBLE  sum of quantity * unit price, rounded to 2 decimals; null when no
--                       purchase in the window has a known price
--   buyers      BIGINT  distinct non-anonymous customers who bought the item in the window
--   window_start DATE   first day of the window (run_date - days + 1)
--   window_end  DATE    last day of the window (run_date)

WITH window_purchases AS (
    SELECT
        item_id,
        count(*) AS purchases,
        sum(value) AS units,
        sum(value * price) AS revenue,
        count(DISTINCT user_id) AS buyers
    FROM silver_interactions
    WHERE event_type = 'purchase'
      AND event_date BETWEEN date_sub(CAST(:run_date AS DATE), CAST(:days AS INT) - 1)
                         AND CAST(:run_date AS DATE)
    GROUP BY item_id
),
ranked AS (
    SELECT
        *,
        row_number() OVER (ORDER BY purchases DESC, revenue DESC NULLS LAST, item_id) AS rank
    FROM window_purchases
)
SELECT
    r.rank,
    r.item_id,
    i.title,
    coalesce(i.category, 'unknown') AS category,
    r.purchases,
    r.units,
    round(r.revenue, 2) AS revenue,
    r.buyers,
    date_sub(CAST(:run_date AS DATE), CAST(:days AS INT) - 1) AS window_start,
    CAST(:run_date AS DATE) AS window_end
FROM ranked AS r
LEFT JOIN items AS i ON i.item_id = r.item_id
WHERE r.rank <= CAST(:n AS INT)
ORDER BY r.rank
