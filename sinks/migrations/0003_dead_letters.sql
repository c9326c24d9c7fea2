-- Messages the pipeline could not use, with the typed reason and the original bytes.
-- Keyed by source position, so a dead letter written again after a crash is the same row.
-- No TTL: ClickHouse 18.16 has no table TTL (added in 19.6); retention is an operator's
-- ALTER TABLE ... DROP PARTITION of old months.
CREATE TABLE IF NOT EXISTS dead_letters
(
    received_at DateTime('UTC'),
    reason String,
    detail String,
    topic String,
    partition UInt32,
    offset UInt64,
    kafka_ts DateTime('UTC'),
    payload String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset);
