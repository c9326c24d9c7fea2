-- One row per (attribution model, conversion, touchpoint): the share of a conversion's
-- revenue and profit credited to a campaign touch. share_micros is the fraction of the
-- conversion credited, in millionths; money is micro-units of the base currency.
CREATE TABLE IF NOT EXISTS credited_conversions
(
    conversion_event_id String,
    order_id String,
    user_id String,
    conversion_time DateTime('UTC'),
    model String,
    campaign_id String,
    channel String,
    touch_event_id String,
    touch_type String,
    touch_time DateTime('UTC'),
    share_micros Int64,
    revenue_micros Int64,
    profit_micros Int64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(conversion_time)
ORDER BY (model, conversion_event_id, touch_event_id);
