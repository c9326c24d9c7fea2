-- Panes instead of windows (window slicing). The worker writes one row per pane it
-- touched (kpi_panes): a pane is a configured tumbling window (window_kind 'tumbling') or a
-- hopping window's step (window_kind 'pane' when that size is not also a tumbling window).
-- A pane that hopping windows are composed of names their sizes (hopping_seconds, as
-- configured when the row was written) and carries its reach sketch: reach_users, the
-- users' 64-bit hashes while the pane's reach is exact, and reach_codes, the HyperLogLog
-- registers it sets (index * 64 + rank, see pipeline/hll.py).
-- kpi_watermarks: per stage-two partition (of `partitions`), how far the worker has written
-- every pane as final (written after that batch's panes); until every partition has a row,
-- no composed window is final.
-- kpi_current keeps its columns and meaning: tumbling windows are their panes' newest rows;
-- a hopping window sums its panes' counters, its reach is the exact union of their users
-- while every pane is exact and otherwise Ertl's estimate over the merged registers (the
-- formula of pipeline.hll.estimate), its version is the sum of its panes' versions (plus
-- one once final), and it is final once the lowest watermark over the partitions has
-- passed its end. kpi_windows, written by earlier versions, is no longer read.
CREATE TABLE IF NOT EXISTS kpi_panes
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
    hopping_seconds Array(UInt32),
    reach_users Array(UInt64),
    reach_codes Array(UInt32),
    updated_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (campaign_id, window_seconds, window_kind, window_start, channel);

CREATE TABLE IF NOT EXISTS kpi_watermarks
(
    partition UInt16,
    partitions UInt16,
    watermark_ms UInt64,
    updated_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(watermark_ms)
ORDER BY (partition);

-- The newest row of every pane.
CREATE VIEW IF NOT EXISTS kpi_pane_current AS
SELECT
    campaign_id,
    channel,
    window_kind,
    window_seconds,
    window_start,
    argMax(window_end, version) AS window_end,
    argMax(is_final, version) AS is_final,
    max(version) AS latest_version,
    argMax(events, version) AS events,
    argMax(impressions, version) AS impressions,
    argMax(reach, version) AS reach,
    argMax(likes, version) AS likes,
    argMax(comments, version) AS comments,
    argMax(shares, version) AS shares,
    argMax(saves, version) AS saves,
    argMax(clicks, version) AS clicks,
    argMax(follows, version) AS follows,
    argMax(unfollows, version) AS unfollows,
    argMax(mentions_positive, version) AS mentions_positive,
    argMax(mentions_neutral, version) AS mentions_neutral,
    argMax(mentions_negative, version) AS mentions_negative,
    argMax(service_contacts, version) AS service_contacts,
    argMax(service_resolved, version) AS service_resolved,
    argMax(service_savings_micros, version) AS service_savings_micros,
    argMax(visits, version) AS visits,
    argMax(conversion_credit_micros, version) AS conversion_credit_micros,
    argMax(revenue_micros, version) AS revenue_micros,
    argMax(profit_micros, version) AS profit_micros,
    argMax(media_spend_micros, version) AS media_spend_micros,
    argMax(effort_spend_micros, version) AS effort_spend_micros,
    argMax(tools_spend_micros, version) AS tools_spend_micros,
    argMax(follower_revenue_micros, version) AS follower_revenue_micros,
    argMax(hopping_seconds, version) AS hopping_seconds,
    argMax(reach_users, version) AS reach_users,
    argMax(reach_codes, version) AS reach_codes,
    argMax(updated_at, version) AS updated_at
FROM kpi_panes
GROUP BY campaign_id, channel, window_kind, window_seconds, window_start;

-- DROP TABLE: 18.16 has no DROP VIEW; a view is dropped as a table on every engine.
DROP TABLE IF EXISTS kpi_current;

CREATE VIEW IF NOT EXISTS kpi_current AS
SELECT
    campaign_id,
    channel,
    window_kind,
    window_seconds,
    window_start,
    window_end,
    is_final,
    latest_version AS version,
    events,
    impressions,
    reach,
    likes,
    comments,
    shares,
    saves,
    clicks,
    follows,
    unfollows,
    mentions_positive,
    mentions_neutral,
    mentions_negative,
    service_contacts,
    service_resolved,
    service_savings_micros,
    visits,
    conversion_credit_micros,
    revenue_micros,
    profit_micros,
    media_spend_micros,
    effort_spend_micros,
    tools_spend_micros,
    follower_revenue_micros,
    updated_at
FROM kpi_pane_current
WHERE window_kind = 'tumbling'
UNION ALL
SELECT
    campaign_id,
    channel,
    window_kind,
    window_seconds,
    window_start,
    window_end,
    is_final,
    version,
    events,
    impressions,
    reach,
    likes,
    comments,
    shares,
    saves,
    clicks,
    follows,
    unfollows,
    mentions_positive,
    mentions_neutral,
    mentions_negative,
    service_contacts,
    service_resolved,
    service_savings_micros,
    visits,
    conversion_credit_micros,
    revenue_micros,
    profit_micros,
    media_spend_micros,
    effort_spend_micros,
    tools_spend_micros,
    follower_revenue_micros,
    updated_at
FROM
(
    SELECT
        campaign_id,
        channel,
        'hopping' AS window_kind,
        hop_seconds AS window_seconds,
        toDateTime(hop_start, 'UTC') AS window_start,
        toDateTime(hop_start + hop_seconds, 'UTC') AS window_end,
        toUInt8((hop_start + hop_seconds) * 1000 <= (
            SELECT if(count() >= max(partitions), min(latest), 0) FROM (
                SELECT partition, max(partitions) AS partitions, max(watermark_ms) AS latest
                FROM kpi_watermarks
                GROUP BY partition
            )
        )) AS is_final,
        sum(latest_version) + is_final AS version,
        sum(events) AS events,
        sum(impressions) AS impressions,
        sum(likes) AS likes,
        sum(comments) AS comments,
        sum(shares) AS shares,
        sum(saves) AS saves,
        sum(clicks) AS clicks,
        sum(follows) AS follows,
        sum(unfollows) AS unfollows,
        sum(mentions_positive) AS mentions_positive,
        sum(mentions_neutral) AS mentions_neutral,
        sum(mentions_negative) AS mentions_negative,
        sum(service_contacts) AS service_contacts,
        sum(service_resolved) AS service_resolved,
        sum(service_savings_micros) AS service_savings_micros,
        sum(visits) AS visits,
        sum(conversion_credit_micros) AS conversion_credit_micros,
        sum(revenue_micros) AS revenue_micros,
        sum(profit_micros) AS profit_micros,
        sum(media_spend_micros) AS media_spend_micros,
        sum(effort_spend_micros) AS effort_spend_micros,
        sum(tools_spend_micros) AS tools_spend_micros,
        sum(follower_revenue_micros) AS follower_revenue_micros,
        if(
            max(length(reach_users) = 0 AND length(reach_codes) > 0) = 0,
            toInt64(uniqExactArray(reach_users)),
            toInt64(round(16777216 / (2 * ln(2)) / (
                arraySum(arrayMap(c -> exp2(-toFloat64(c % 64)), register_maxima))
                + 4096 * (unset_share + arraySum(arrayMap(
                    k -> pow(unset_share, exp2(k + 1)) * exp2(k), range(64)
                )))
            ))
        )) AS reach,
        arrayReverseSort(groupArrayArray(reach_codes)) AS merged_codes,
        arrayFilter(
            (code, before) -> intDiv(code, 64) != intDiv(before, 64),
            merged_codes,
            arrayPopBack(arrayPushFront(merged_codes, toUInt32(4294967295)))
        ) AS register_maxima,
        (4096 - length(register_maxima)) / 4096 AS unset_share,
        max(updated_at) AS updated_at
    FROM
    (
        SELECT
            campaign_id,
            channel,
            hop_seconds,
            -- every start of a hopping window that covers this pane
            toUInt32(toUInt32(window_start)
                - arrayJoin(range(toUInt32(intDiv(hop_seconds, window_seconds)))) * window_seconds
            ) AS hop_start,
            latest_version,
            events,
            impressions,
            likes,
            comments,
            shares,
            saves,
            clicks,
            follows,
            unfollows,
            mentions_positive,
            mentions_neutral,
            mentions_negative,
            service_contacts,
            service_resolved,
            service_savings_micros,
            visits,
            conversion_credit_micros,
            revenue_micros,
            profit_micros,
            media_spend_micros,
            effort_spend_micros,
            tools_spend_micros,
            follower_revenue_micros,
            reach_users,
            reach_codes,
            updated_at
        FROM kpi_pane_current
        ARRAY JOIN hopping_seconds AS hop_seconds
    )
    GROUP BY campaign_id, channel, hop_seconds, hop_start
);
