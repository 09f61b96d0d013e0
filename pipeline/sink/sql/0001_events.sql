-- Raw events, one row per accepted event. Keyed by (brand_id, event_id), so a retried or
-- replayed insert replaces the same row: count with FINAL, or use the events_unique view.
CREATE TABLE IF NOT EXISTS {db}.events
(
    brand_id        String                COMMENT 'Brand that owns the event',
    event_id        String                COMMENT 'Unique per brand; the dedup key',
    type            Enum8('click' = 1, 'share' = 2, 'purchase' = 3) COMMENT 'Event type',
    schema_version  UInt8                 COMMENT 'Event contract version',
    user_id         String                COMMENT 'Brand-scoped pseudonymous user id',
    occurred_at     DateTime('UTC')       COMMENT 'Event time (UTC, seconds)',
    channel         {lc_string}           COMMENT 'Channel the event happened on',
    kol_id          String                COMMENT 'KOL whose content brought the traffic, or empty',
    campaign_id     String                COMMENT 'Campaign, or empty',
    share_id        String                COMMENT 'click/purchase: share link used; share: the new share id',
    parent_share_id String                COMMENT 'share: the share this re-shares, or empty',
    target_id       String                COMMENT 'click/share: what was clicked or shared, or empty',
    order_id        String                COMMENT 'purchase: order id, else empty',
    amount          Decimal(18, 4)        COMMENT 'purchase: amount in currency, else 0',
    currency        {lc_string}           COMMENT 'purchase: ISO 4217 code, else empty',
    properties      String                COMMENT 'properties object as JSON text, or empty',
    received_at     DateTime('UTC')       COMMENT 'When the collector received it (0 if it did not)',
    ingested_at     DateTime('UTC')       COMMENT 'When the worker accepted it (wall time)',
    kafka_partition UInt32                COMMENT 'Partition of the source message',
    kafka_offset    UInt64                COMMENT 'Offset of the source message'
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (brand_id, event_id);

-- Each event once, whatever retries, restarts and replays happened.
CREATE VIEW IF NOT EXISTS {db}.events_unique AS
SELECT * FROM {db}.events FINAL;
