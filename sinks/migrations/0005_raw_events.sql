-- Every valid ingest event as received (payload is the original JSON), deduplicated by
-- (topic, event_id) so a replayed event is stored once.
CREATE TABLE IF NOT EXISTS raw_events
(
    event_id String,
    topic String,
    event_type String,
    event_time DateTime('UTC'),
    campaign_id String,
    channel String,
    user_id String,
    payload String,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (topic, event_id);
