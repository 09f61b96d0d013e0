-- Every rejected input with its reason and original bytes. Keyed by where it came from
-- (topic, partition, offset, element of an envelope), so a replay adds no rows.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    source_topic      String           COMMENT 'Topic the bad input was read from',
    source_partition  UInt32           COMMENT 'Its partition',
    source_offset     UInt64           COMMENT 'Its offset',
    element_index     Int32            COMMENT 'Index in an envelope, -1 for a whole message',
    source_timestamp  DateTime('UTC')  COMMENT 'Kafka timestamp of the source message',
    brand_id          String           COMMENT 'brand_id of the input when it could be read, else empty',
    reason            {lc_string}      COMMENT 'Machine-readable reason (invalid_json, schema_violation, ...)',
    detail            String           COMMENT 'Human-readable detail: which field, what was wrong',
    payload           String           COMMENT 'The original bytes',
    dead_lettered_at  DateTime('UTC')  COMMENT 'When the worker rejected it (wall time)'
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(source_timestamp)
ORDER BY (source_topic, source_partition, source_offset, element_index);

CREATE VIEW IF NOT EXISTS {db}.dead_letters_unique AS
SELECT * FROM {db}.dead_letters FINAL;
