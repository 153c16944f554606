-- feedback_rates: how the served lists did: click-through, add-to-cart and conversion rates and the
-- revenue attributed to them.
--
-- Answers: for the lists the lookup service answered on the days :start_date to :end_date (both
-- included), per day, model version, variant, list source and position: how many items were shown,
-- how many of those were clicked, put in the cart and bought, and the revenue of the purchases
-- credited to them (attributed_feedback: the request id, else last touch within the window).
--
-- Shape: one row per (day, model_version, variant, list_source, position) with at least one item
-- shown, plus rollups (GROUPING SETS): per (day, model_version, variant, list_source) with
-- position null, and per (day, model_version, variant) with list_source '(all)', position null.
-- A *shown item* is one position of one impression. It counts as clicked (carted, purchased) when
-- at least one event of that type is credited to that impression and item: two clicks on one shown
-- item count once, so every rate is between 0 and 1. purchases, units and revenue count every
-- credited purchase. The day is the impression's (UTC), not the event's: an event counts with the
-- list that earned it, so attribute the days after :end_date too (a window's worth) first.
--
-- Parameters (passed as strings, cast below):
--   :start_date  first day of the impressions, YYYY-MM-DD (no default)
--   :end_date    last day of the impressions, YYYY-MM-DD (no default)
--
-- Reads: impressions (event_date in the range; items exploded) and attributed_feedback (events
-- credited to those impressions: impression_date in the range).
--
-- Columns:
--   day               DATE    the impressions' day (UTC)
--   model_version     STRING  the model version in the published version that answered
--                             (YYYYMMDD-m<model>-<hash>, an hourly patch over it too); null when
--                             the version id has another shape
--   variant           STRING  the A/B variant served; null outside experiments
--   list_source       STRING  where the item came from: personal (the model's own pick; `model`
--                             in impressions.items.tag), buy_again, trending, popular, explore,
--                             pinned, backfill, similar...; '(all)' on the per-variant rollup
--   position          INT     the item's position in the list, 1 = top; null on the rollups
--   lists             BIGINT  impressions (answered lists) with at least one such item
--   shown             BIGINT  shown items
--   clicked           BIGINT  shown items with at least one credited click
--   carted            BIGINT  shown items with at least one credited add_to_cart
--   purchased         BIGINT  shown items with at least one credited purchase
--   ctr               DOUBLE  clicked / shown, 4 decimals
--   add_to_cart_rate  DOUBLE  carted / shown, 4 decimals
--   conversion_rate   DOUBLE  purchased / shown, 4 decimals
--   purchases         BIGINT  credited purchase events
--   units             BIGINT  their quantity (a purchase without one counts 1)
--   revenue           DOUBLE  their price x quantity, 2 decimals; null when none has a price

WITH shown AS (
    SELECT
        i.event_date AS day,
        i.impression_id,
        nullif(regexp_extract(i.version, '^[0-9]{8}-m([^-]+)-[0-9a-f]+', 1), '') AS model_version,
        i.variant,
        CASE s.tag WHEN 'model' THEN 'personal' ELSE s.tag END AS list_source,
        s.position,
        s.item_id
    FROM impressions AS i
    LATERAL VIEW explode(i.items) shown_item AS s
    WHERE i.event_date BETWEEN CAST(:start_date AS DATE) AND CAST(:end_date AS DATE)
),
acted AS (
    SELECT
        impression_id,
        item_id,
        max(CASE WHEN type = 'click' THEN 1 ELSE 0 END) AS clicked,
        max(CASE WHEN type = 'add_to_cart' THEN 1 ELSE 0 END) AS carted,
        max(CASE WHEN type = 'purchase' THEN 1 ELSE 0 END) AS purchased,
        count_if(type = 'purchase') AS purchases,
        sum(CASE WHEN type = 'purchase' THEN coalesce(quantity, 1) END) AS units,
        sum(revenue) AS revenue
    FROM attributed_feedback
    WHERE impression_id IS NOT NULL
      AND impression_date BETWEEN CAST(:start_date AS DATE) AND CAST(:end_date AS DATE)
    GROUP BY impression_id, item_id
),
rolled AS (
    SELECT
        s.day,
        s.model_version,
        s.variant,
        CASE WHEN grouping(s.list_source) = 1 THEN '(all)' ELSE s.list_source END AS list_source,
        s.position,
        count(DISTINCT s.impression_id) AS lists,
        count(*) AS shown,
        coalesce(sum(a.clicked), 0) AS clicked,
        coalesce(sum(a.carted), 0) AS carted,
        coalesce(sum(a.purchased), 0) AS purchased,
        coalesce(sum(a.purchases), 0) AS purchases,
        coalesce(sum(a.units), 0) AS units,
        sum(a.revenue) AS revenue
    FROM shown AS s
    LEFT JOIN acted AS a ON a.impression_id = s.impression_id AND a.item_id = s.item_id
    GROUP BY GROUPING SETS (
        (s.day, s.model_version, s.variant),
        (s.day, s.model_version, s.variant, s.list_source),
        (s.day, s.model_version, s.variant, s.list_source, s.position)
    )
)
SELECT
    day,
    model_version,
    variant,
    list_source,
    position,
    lists,
    shown,
    clicked,
    carted,
    purchased,
    round(clicked / shown, 4) AS ctr,
    round(carted / shown, 4) AS add_to_cart_rate,
    round(purchased / shown, 4) AS conversion_rate,
    purchases,
    units,
    round(revenue, 2) AS revenue
FROM rolled
ORDER BY
    day,
    model_version NULLS LAST,
    variant NULLS FIRST,
    CASE list_source WHEN '(all)' THEN 0 WHEN 'personal' THEN 1 WHEN 'buy_again' THEN 2
                     WHEN 'trending' THEN 3 WHEN 'popular' THEN 4 WHEN 'explore' THEN 5
                     WHEN 'pinned' THEN 6 WHEN 'backfill' THEN 7 ELSE 8 END,
    list_source,
    position NULLS FIRST
