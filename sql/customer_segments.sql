-- customer_segments: how many customers are in each activity segment, and what they buy.
--
-- Answers: per activity_segment of user_features as of :run_date, the number of customers,
-- how many of them bought anything, their average number of purchases and their average
-- basket value; once for the segment as a whole (country = '(all)') and once per country.
--
-- Parameters (passed as strings, cast below):
--   :run_date  the as_of_date of the user_features slice to read, YYYY-MM-DD (no default:
--              the features must have been built for that date, or the result is empty)
--
-- Reads: user_features (one row per known, non-anonymous customer per as_of_date).
-- Segments (see features/user_features.py, windows from conf features.*_window_days):
-- new = first event less than long_window_days ago; otherwise active = last event less than
-- short_window_days ago, lapsing = less than long_window_days ago, dormant = older.
--
-- Columns:
--   activity_segment  STRING  new / active / lapsing / dormant (rows in that order)
--   country           STRING  '(all)' on the segment's total row (listed first), else the
--                             customer's most frequent country; '(unknown)' when none
--   customers         BIGINT  customers in the group
--   buyers            BIGINT  customers with at least one purchase up to run_date
--   avg_purchases     DOUBLE  mean purchase lines per customer (non-buyers count as 0),
--                             rounded to 2 decimals
--   avg_basket_value  DOUBLE  mean over the group's customers of each one's average basket
--                             value (quantity * price per order), rounded to 2 decimals;
--                             customers without a priced purchase are left out; null when
--                             no customer in the group has one

WITH grouped AS (
    SELECT
        activity_segment,
        CASE WHEN grouping(country) = 1 THEN '(all)' ELSE coalesce(country, '(unknown)') END AS country,
        grouping(country) AS is_total,
        count(*) AS customers,
        count_if(n_purchases > 0) AS buyers,
        round(avg(n_purchases), 2) AS avg_purchases,
        round(avg(avg_basket_value), 2) AS avg_basket_value
    FROM user_features
    WHERE as_of_date = CAST(:run_date AS DATE)
    GROUP BY GROUPING SETS ((activity_segment), (activity_segment, country))
)
SELECT activity_segment, country, customers, buyers, avg_purchases, avg_basket_value
FROM grouped
ORDER BY
    CASE activity_segment WHEN 'new' THEN 1 WHEN 'active' THEN 2 WHEN 'lapsing' THEN 3
                          WHEN 'dormant' THEN 4 ELSE 5 END,
    is_total DESC,
    customers DESC,
    country
