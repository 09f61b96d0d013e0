-- Row changes of the domain core (pipeline/domain/rows.py). Snapshot tables keep one row per
-- key and version (ReplacingMergeTree(version): the newest wins); signed tables keep each
-- outcome and its retraction (sign -1) once, keyed by their identity, so sum(sign) is the net.
-- Event times are DateTime (UTC, whole seconds).

CREATE TABLE IF NOT EXISTS {db}.user_loyalty
(
    brand_id                String,
    user_id                 String,
    version                 UInt64                      COMMENT 'Increases at each change of this user',
    clicks                  UInt64                      COMMENT 'Lifetime clicks',
    shares                  UInt64                      COMMENT 'Lifetime shares',
    orders                  UInt64                      COMMENT 'Lifetime purchases (orders)',
    amount_currencies       Array(String)               COMMENT 'Currencies, parallel to amount_totals',
    amount_totals           Array(Decimal(38, 4))       COMMENT 'Lifetime amount per currency',
    first_seen_at           Nullable(DateTime('UTC')),
    last_seen_at            Nullable(DateTime('UTC')),
    first_purchase_at       Nullable(DateTime('UTC')),
    second_purchase_at      Nullable(DateTime('UTC'))   COMMENT 'Time of the repurchase, if any',
    last_purchase_at        Nullable(DateTime('UTC'))   COMMENT 'Recency for RFM',
    repurchased             UInt8                       COMMENT '1 once the user bought twice',
    acquisition_kind        Nullable(String)            COMMENT 'First touch: kol or referral; NULL if none',
    acquisition_kol_id      Nullable(String),
    acquisition_referrer_id Nullable(String),
    acquisition_share_id    Nullable(String),
    acquisition_event_id    Nullable(String),
    acquired_at             Nullable(DateTime('UTC')),
    tier                    {lc_string}                 COMMENT 'visitor, customer, repeat, loyal, advocate',
    is_koc                  UInt8,
    koc_since_at            Nullable(DateTime('UTC')),
    late_events             UInt64                      COMMENT 'Events counted in lifetime state only (too late)'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, user_id);

CREATE TABLE IF NOT EXISTS {db}.share_chains
(
    brand_id        String,
    share_id        String,
    version         UInt64,
    event_id        String                     COMMENT 'The share event',
    sharer_id       String                     COMMENT 'Who shared',
    parent_share_id Nullable(String)           COMMENT 'Re-share of this share, if any',
    kol_id          Nullable(String)           COMMENT 'KOL on the share event itself',
    shared_at       DateTime('UTC'),
    depth           Nullable(UInt32)           COMMENT '0 for a root share; NULL while an ancestor is unknown',
    root_share_id   Nullable(String),
    root_kol_id     Nullable(String)           COMMENT 'The chain''s KOL',
    resolved        UInt8                      COMMENT '1 when every ancestor is known'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, share_id);

CREATE TABLE IF NOT EXISTS {db}.purchase_credits
(
    brand_id          String,
    purchase_event_id String,
    order_id          String,
    buyer_id          String,
    purchased_at      DateTime('UTC'),
    amount            Decimal(18, 4),
    currency          {lc_string},
    kind              {lc_string}            COMMENT 'referral, kol or organic',
    sharer_id         Nullable(String)       COMMENT 'referral: the sharer credited',
    kol_id            Nullable(String)       COMMENT 'kol: the KOL; referral: the chain''s KOL',
    share_id          Nullable(String),
    share_depth       Nullable(UInt32),
    root_share_id     Nullable(String),
    touch_event_id    Nullable(String)       COMMENT 'The click (or share-link purchase) credited',
    touched_at        Nullable(DateTime('UTC')),
    revision          UInt64                 COMMENT 'Outcome number of this purchase',
    sign              Int8                   COMMENT '+1 outcome, -1 retraction of that outcome'
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(purchased_at)
ORDER BY (brand_id, purchase_event_id, revision, sign);

CREATE TABLE IF NOT EXISTS {db}.koc_promotions
(
    brand_id                    String,
    sharer_id                   String,
    promoted_at                 DateTime('UTC')     COMMENT 'Event time the rule first held',
    promoting_purchase_event_id String,
    buyer_ids                   Array(String)       COMMENT 'Distinct referred buyers in the window',
    evidence_purchase_event_ids Array(String),
    evidence_order_ids          Array(String),
    evidence_buyer_ids          Array(String),
    evidence_purchased_at       Array(DateTime('UTC')),
    revision                    UInt64,
    sign                        Int8
)
ENGINE = ReplacingMergeTree()
ORDER BY (brand_id, sharer_id, revision, sign);

CREATE TABLE IF NOT EXISTS {db}.referrers
(
    brand_id                  String,
    sharer_id                 String,
    version                   UInt64,
    referred_orders           UInt64                    COMMENT 'Purchases currently credited',
    last_referred_purchase_at Nullable(DateTime('UTC')) COMMENT 'Active KOC is derived from this',
    is_koc                    UInt8,
    koc_since_at              Nullable(DateTime('UTC'))
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, sharer_id);

CREATE TABLE IF NOT EXISTS {db}.late_events
(
    brand_id     String,
    processor    {lc_string}       COMMENT 'user, share or sharer',
    subject_id   String,
    event_id     String,
    event_type   {lc_string},
    occurred_at  DateTime('UTC'),
    watermark_at DateTime('UTC')   COMMENT 'Watermark it was judged against',
    reason       {lc_string}
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (brand_id, processor, subject_id, event_id, event_type);
