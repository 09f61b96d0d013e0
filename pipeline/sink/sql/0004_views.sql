-- The query surface for data engineers: views that give the current answer, so a reader never
-- has to know about row versions, signed retractions or background merges. Every view reads
-- the deduplicated tables (FINAL), so retried inserts and replays never change a result.
-- They are plain views, computed when queried: filter on brand_id and the time column.

-- The latest state of each user (loyalty counters, acquisition, tier, KOC status).
CREATE VIEW IF NOT EXISTS {db}.user_latest AS
SELECT * FROM {db}.user_loyalty FINAL;

-- The latest state of each share (its chain: depth, root, the chain's KOL).
CREATE VIEW IF NOT EXISTS {db}.share_chains_latest AS
SELECT * FROM {db}.share_chains FINAL;

-- The latest state of each sharer who has orders credited to them or is a KOC (a sharer
-- whose only credit was retracted later drops out).
CREATE VIEW IF NOT EXISTS {db}.referrers_latest AS
SELECT * FROM {db}.referrers FINAL
WHERE referred_orders > 0 OR is_koc = 1;

-- The attribution that currently holds for each purchase: one row per purchase, outcomes
-- that were retracted later are gone. kind is referral, kol or organic.
CREATE VIEW IF NOT EXISTS {db}.credits_current AS
SELECT
    brand_id, purchase_event_id, order_id, buyer_id, purchased_at, amount, currency, kind,
    sharer_id, kol_id, share_id, share_depth, root_share_id, touch_event_id, touched_at
FROM {db}.purchase_credits FINAL
GROUP BY
    brand_id, purchase_event_id, order_id, buyer_id, purchased_at, amount, currency, kind,
    sharer_id, kol_id, share_id, share_depth, root_share_id, touch_event_id, touched_at
HAVING sum(sign) > 0;

-- Each referral credit and each retraction of one (sign -1), so that sums over sign and
-- signed_amount are right at any moment: sum(sign) counts referred orders, sum(signed_amount)
-- their revenue. depth is the credited share's depth in its chain (0 = a root share).
CREATE VIEW IF NOT EXISTS {db}.referrals AS
SELECT
    brand_id, purchase_event_id, order_id, buyer_id, purchased_at, sharer_id, share_id,
    share_depth AS depth, root_share_id, kol_id, amount, currency, revision, sign,
    amount * sign AS signed_amount
FROM {db}.purchase_credits FINAL
WHERE kind = 'referral';

-- Current KOCs: sharers whose referred buyers met the KOC rule, since when, and the
-- promotion's evidence (distinct referred buyers within the KOC window).
CREATE VIEW IF NOT EXISTS {db}.kocs AS
SELECT brand_id, sharer_id, promoted_at, promoting_purchase_event_id, buyer_ids
FROM {db}.koc_promotions FINAL
GROUP BY brand_id, sharer_id, promoted_at, promoting_purchase_event_id, buyer_ids
HAVING sum(sign) > 0;

-- Per KOL and minute (UTC): clicks on the KOL's content and distinct clickers, shares in
-- chains rooted at the KOL's content, purchases carrying the KOL's id, purchases credited
-- to the KOL (directly or through a chain it started; net of retractions), users acquired
-- through the KOL, and those of them who became KOCs. Minutes where everything nets to zero
-- (a credit given, then retracted) have no row. unique_clickers is distinct within a
-- minute: count distinct users over longer spans from events, not by summing this column.
-- Revenue per currency is in kol_revenue_minute.
CREATE VIEW IF NOT EXISTS {db}.kol_performance_minute AS
SELECT
    brand_id,
    kol_id,
    minute,
    sum(n_clicks) AS clicks,
    uniqExactIf(clicker, clicker != '') AS unique_clickers,
    sum(n_shares) AS shares,
    sum(n_purchases) AS purchases,
    sum(n_attributed) AS attributed_orders,
    sum(n_new_users) AS new_users,
    sum(n_new_kocs) AS new_kocs
FROM
(
    SELECT
        brand_id, kol_id, toStartOfMinute(occurred_at) AS minute,
        toUInt64(type = 'click') AS n_clicks,
        if(type = 'click', user_id, '') AS clicker,
        toUInt64(0) AS n_shares,
        toUInt64(type = 'purchase') AS n_purchases,
        toInt64(0) AS n_attributed,
        toUInt64(0) AS n_new_users,
        toUInt64(0) AS n_new_kocs
    FROM {db}.events FINAL
    WHERE kol_id != '' AND type IN ('click', 'purchase')
    UNION ALL
    SELECT
        brand_id, assumeNotNull(root_kol_id), toStartOfMinute(shared_at),
        toUInt64(0), '', toUInt64(1), toUInt64(0), toInt64(0), toUInt64(0), toUInt64(0)
    FROM {db}.share_chains FINAL
    WHERE root_kol_id IS NOT NULL
    UNION ALL
    SELECT
        brand_id, assumeNotNull(kol_id), toStartOfMinute(purchased_at),
        toUInt64(0), '', toUInt64(0), toUInt64(0), toInt64(sign), toUInt64(0), toUInt64(0)
    FROM {db}.purchase_credits FINAL
    WHERE kind != 'organic' AND kol_id IS NOT NULL
    UNION ALL
    SELECT
        brand_id, assumeNotNull(acquisition_kol_id), toStartOfMinute(assumeNotNull(acquired_at)),
        toUInt64(0), '', toUInt64(0), toUInt64(0), toInt64(0), toUInt64(1), toUInt64(0)
    FROM {db}.user_loyalty FINAL
    WHERE acquisition_kol_id IS NOT NULL AND acquired_at IS NOT NULL
    UNION ALL
    SELECT
        brand_id, assumeNotNull(acquisition_kol_id), toStartOfMinute(assumeNotNull(koc_since_at)),
        toUInt64(0), '', toUInt64(0), toUInt64(0), toInt64(0), toUInt64(0), toUInt64(1)
    FROM {db}.user_loyalty FINAL
    WHERE acquisition_kol_id IS NOT NULL AND is_koc = 1 AND koc_since_at IS NOT NULL
)
GROUP BY brand_id, kol_id, minute
HAVING clicks + shares + purchases + new_users + new_kocs > 0 OR attributed_orders != 0;

-- Attributed orders and revenue per KOL, minute (UTC) of purchase and currency, net of
-- retractions (amounts in different currencies are never added together).
CREATE VIEW IF NOT EXISTS {db}.kol_revenue_minute AS
SELECT
    brand_id,
    kol_id,
    toStartOfMinute(purchased_at) AS minute,
    currency,
    sum(toInt64(sign)) AS attributed_orders,
    sum(amount * sign) AS attributed_amount
FROM {db}.purchase_credits FINAL
WHERE kind != 'organic' AND kol_id IS NOT NULL
GROUP BY brand_id, kol_id, minute, currency
HAVING attributed_orders != 0 OR attributed_amount != 0;

-- The conversion funnel per brand, channel and minute (UTC) of the events: clicks and
-- distinct clickers, shares, purchases and distinct buyers, and purchases that are currently
-- credited to a KOL or a referral (attributed_purchases <= purchases). Conversion is
-- purchases / clicks over a span; distinct counts are per minute.
CREATE VIEW IF NOT EXISTS {db}.funnel_minute AS
SELECT
    brand_id,
    channel,
    toStartOfMinute(occurred_at) AS minute,
    countIf(type = 'click') AS clicks,
    uniqExactIf(user_id, type = 'click') AS clickers,
    countIf(type = 'share') AS shares,
    countIf(type = 'purchase') AS purchases,
    uniqExactIf(user_id, type = 'purchase') AS buyers,
    countIf(
        type = 'purchase'
        AND (brand_id, event_id) IN (
            SELECT brand_id, purchase_event_id FROM {db}.credits_current WHERE kind != 'organic'
        )
    ) AS attributed_purchases
FROM {db}.events FINAL
GROUP BY brand_id, channel, minute;
