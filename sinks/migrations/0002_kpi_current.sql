-- The newest version of every KPI window: what readers use instead of kpi_windows, so they
-- never need FINAL. argMax rather than FINAL because it gives the same answer on every
-- engine and under every filter: with FINAL a condition that reaches PREWHERE is applied
-- before versions are collapsed and can return a superseded row.
-- The inner query names its max(version) latest_version: aliasing it "version" in the same
-- SELECT would make every argMax(..., version) refer to the aggregate (ILLEGAL_AGGREGATION).
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
FROM
(
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
        argMax(updated_at, version) AS updated_at
    FROM kpi_windows
    GROUP BY campaign_id, channel, window_kind, window_seconds, window_start
);
