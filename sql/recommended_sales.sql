-- recommended_sales: which recommended products sold (for a store manager).
--
-- Answers: the :n items with the most revenue from purchases credited to a recommendation
-- (attributed_feedback: the purchase's request id, else the customer's last list with the item
-- within the window) made on the days :start_date to :end_date (both included), with the
-- catalog's title, the units and revenue, how many customers bought them that way, which list
-- sources sold them, and what share of the item's reported units that is. Ties on revenue go to
-- more units, then to the smaller item_id, so the ranking is the same on every run.
--
-- Parameters (passed as strings, cast below):
--   :start_date  first day of the purchases, YYYY-MM-DD (no default)
--   :end_date    last day of the purchases, YYYY-MM-DD (no default)
--   :n           how many items to return
-- param n=50
--
-- Reads: attributed_feedback (purchase events by event_date; every reported purchase has a row,
-- credited or not) and items (the catalog).
--
-- Columns:
--   rank                  INT     1 = most attributed revenue
--   item_id               STRING  the item
--   title                 STRING  catalog title; null when the item is not in the catalog
--   attributed_purchases  BIGINT  purchase events credited to a recommendation
--   units                 BIGINT  their quantity (a purchase without one counts 1)
--   revenue               DOUBLE  their price x quantity, 2 decimals; null when none has a price
--   buyers                BIGINT  distinct customers among them
--   list_sources          STRING  the list sources that sold it (personal, buy_again, trending,
--                                 popular, explore, ...), sorted, comma separated
--   recommended_share     DOUBLE  units / every reported purchase unit of the item in the days,
--                                 credited or not, 4 decimals

WITH purchases AS (
    SELECT item_id, user_id, impression_id, list_source, coalesce(quantity, 1) AS units, revenue
    FROM attributed_feedback
    WHERE type = 'purchase'
      AND event_date BETWEEN CAST(:start_date AS DATE) AND CAST(:end_date AS DATE)
),
sold AS (
    SELECT
        item_id,
        count_if(impression_id IS NOT NULL) AS attributed_purchases,
        sum(CASE WHEN impression_id IS NOT NULL THEN units END) AS units,
        sum(CASE WHEN impression_id IS NOT NULL THEN revenue END) AS revenue,
        count(DISTINCT CASE WHEN impression_id IS NOT NULL THEN user_id END) AS buyers,
        concat_ws(', ', sort_array(collect_set(CASE WHEN impression_id IS NOT NULL THEN list_source END)))
            AS list_sources,
        sum(units) AS all_units
    FROM purchases
    GROUP BY item_id
),
ranked AS (
    SELECT
        *,
        row_number() OVER (ORDER BY revenue DESC NULLS LAST, units DESC, item_id) AS rank
    FROM sold
    WHERE attributed_purchases > 0
)
SELECT
    r.rank,
    r.item_id,
    i.title,
    r.attributed_purchases,
    r.units,
    round(r.revenue, 2) AS revenue,
    r.buyers,
    r.list_sources,
    round(r.units / r.all_units, 4) AS recommended_share
FROM ranked AS r
LEFT JOIN items AS i ON i.item_id = r.item_id
WHERE r.rank <= CAST(:n AS INT)
ORDER BY r.rank
