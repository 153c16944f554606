-- daily_sales: what the shop sold each day, and how many customers were active.
--
-- Answers: for every calendar day (UTC) from :start_date to :end_date, both included, the
-- orders, units and revenue of the purchases in silver_interactions, and how many known
-- customers did anything at all. Every day of the range has a row, with zeros on a day
-- without events; the result is empty when start_date is after end_date.
--
-- Parameters (passed as strings, cast below; no defaults: a report never means "latest"):
--   :start_date  first day, YYYY-MM-DD
--   :end_date    last day, YYYY-MM-DD (included)
--
-- Reads: silver_interactions, all sources together. There, returns are already netted
-- against the purchases they cancel, also a return ingested in a later batch than its
-- purchase (the next hour's, next week's): the purchase keeps its remaining quantity, on the
-- day it was bought, so a day's units can go down when a return arrives later. Non-product
-- lines (postage, fees) are not there: see docs/TABLES.md.
--
-- Columns:
--   event_date        DATE    the day (UTC)
--   orders            BIGINT  distinct (source, session_id) among the day's purchases: an
--                             invoice or basket; purchases without a session id add none
--   units             DOUBLE  sum of purchased quantity (value) after netting returns
--   revenue           DOUBLE  sum of value * price over the purchases, rounded to 2 decimals;
--                             a purchase with unknown price adds units but no revenue
--   active_customers  BIGINT  distinct non-anonymous user_id with any event that day
--                             (view, cart, purchase, rating)

WITH days AS (
    SELECT explode(sequence(CAST(:start_date AS DATE), CAST(:end_date AS DATE))) AS event_date
),
daily AS (
    SELECT
        event_date,
        -- count(DISTINCT a, b) skips a pair holding a null: non-purchases and session-less rows
        count(DISTINCT source, CASE WHEN event_type = 'purchase' THEN session_id END) AS orders,
        sum(CASE WHEN event_type = 'purchase' THEN value END) AS units,
        sum(CASE WHEN event_type = 'purchase' THEN value * price END) AS revenue,
        count(DISTINCT CASE WHEN NOT is_anonymous THEN user_id END) AS active_customers
    FROM silver_interactions
    WHERE event_date BETWEEN CAST(:start_date AS DATE) AND CAST(:end_date AS DATE)
    GROUP BY event_date
)
SELECT
    d.event_date,
    coalesce(s.orders, 0) AS orders,
    coalesce(s.units, 0.0) AS units,
    round(coalesce(s.revenue, 0.0), 2) AS revenue,
    coalesce(s.active_customers, 0) AS active_customers
FROM days AS d
LEFT JOIN daily AS s ON s.event_date = d.event_date
WHERE d.event_date BETWEEN CAST(:start_date AS DATE) AND CAST(:end_date AS DATE)
ORDER BY d.event_date
