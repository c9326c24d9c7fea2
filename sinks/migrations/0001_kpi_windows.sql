-- KPI snapshots: the whole state of one (campaign, channel, window) at one version.
-- Counters only (ratios are computed from sums); *_micros are money in micro-units of the
-- base currency. A rewrite of the same snapshot, or an older version after a newer one,
-- collapses to the newest version (ReplacingMergeTree(version), and argMax in kpi_current).
CREATE TABLE IF NOT EXISTS kpi_windows
(
    campaign_id String,
    channel String,
    window_kind String,
    window_seconds UInt32,
    window_start DateTime('UTC'),
    window_end DateTime('UTC'),
    is_final UInt8,
    version UInt64,
    events Int64,
    impressions Int64,
    reach Int64,
    likes Int64,
    comments Int64,
    shares Int64,
    saves Int64,
    clicks Int64,
    follows Int64,
    unfollows Int64,
    mentions_positive Int64,
    mentions_neutral Int64,
    mentions_negative Int64,
    service_contacts Int64,
    service_resolved Int64,
    service_savings_micros Int64,
    visits Int64,
    conversion_credit_micros Int64,
    revenue_micros Int64,
    profit_micros Int64,
    media_spend_micros Int64,
    effort_spend_micros Int64,
    tools_spend_micros Int64,
    follower_revenue_micros Int64,
    updated_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (campaign_id, window_seconds, window_kind, window_start, channel);
