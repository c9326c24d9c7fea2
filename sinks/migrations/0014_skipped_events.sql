-- Events the pipeline skipped, so that data quality needs no live worker.
-- * skipped_events: one row per skipped event, written by stage one with its batch. reason
--   is 'late' (event time below its source partition's watermark, the newest event time
--   there less the allowed lateness: its windows may already be final, so it counts in
--   none; watermark is that watermark) or 'duplicate' (an event id already counted in the
--   partition; watermark is 0). campaign_id and channel are the campaign key and channel
--   the event names before attribution (a page view's utm_campaign; a conversion's own
--   tag, not its credit), as the KPI rows are keyed. Keyed by source position like
--   dead_letters, so a batch written again after a crash is the same row.
-- skipped_daily: one row per (day, campaign_id, channel, topic): day (UTC, of event time),
--   campaign_id (the key), channel, topic, late, duplicates (each source position once,
--   merged or not): the data-quality figure of each one-day KPI row, read without the
--   worker.
CREATE TABLE IF NOT EXISTS skipped_events
(
    skipped_at DateTime('UTC'),
    reason String,
    topic String,
    partition UInt32,
    offset UInt64,
    event_id String,
    event_type String,
    event_time DateTime('UTC'),
    campaign_id String,
    channel String,
    watermark DateTime('UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (topic, partition, offset);

CREATE VIEW IF NOT EXISTS skipped_daily AS
SELECT
    toDate(event_time) AS day,
    campaign_id,
    channel,
    topic,
    countIf(reason = 'late') AS late,
    countIf(reason = 'duplicate') AS duplicates
FROM
(
    SELECT
        topic,
        partition,
        offset,
        any(reason) AS reason,
        any(event_time) AS event_time,
        any(campaign_id) AS campaign_id,
        any(channel) AS channel
    FROM skipped_events
    GROUP BY topic, partition, offset
)
GROUP BY day, campaign_id, channel, topic;
