-- A dead letter keeps its whole original message on the dead-letter topic; the table keeps
-- a prefix. From this migration on, dead_letters.payload holds at most the first 65536
-- bytes of the original, and dead_letter_originals holds, per source position (the same
-- key as dead_letters), the original's length in bytes and its SHA-256 (64 lowercase hex
-- digits): a reader tells a prefix from a whole payload (length(payload) < payload_bytes)
-- and can match the row with the topic's copy. Written with every dead letter; rows written
-- before this migration have none (they were cut at the max message size, 64 KiB by
-- default, and their detail says the original length). A new table rather than new
-- columns: ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS, and existing rows stay as
-- they are.
CREATE TABLE IF NOT EXISTS dead_letter_originals
(
    received_at DateTime('UTC'),
    topic String,
    partition UInt32,
    offset UInt64,
    payload_bytes UInt64,
    payload_sha256 String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset);
