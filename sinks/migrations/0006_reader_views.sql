-- Views for readers (Grafana, `socialroi report`): they build on kpi_current (the newest
-- version of every window), so no reader needs FINAL or argMax.
-- Rules for every column below:
-- * counters are sums over the rows a view groups (Int64); money is base-currency units
--   (*_micros / 1e6, Float64); conversions are summed attribution credit (Float64);
-- * every ratio is computed from the sums (never an average of ratios), as ONE division of
--   exact integer sums, and is NULL when its denominator is 0 (ClickHouse would give inf or
--   nan); ratio columns are Nullable(Float64) on 18.16 and current engines alike;
-- * spend = media + effort + tools; ROI = (revenue + service savings - spend) / spend;
--   roi_on_profit uses profit instead of revenue; ROAS = revenue / spend; CPA = spend /
--   conversions; CPC = spend / clicks; CPM = 1000 * spend / impressions; cost_per_engagement
--   = spend / engagements; conversion_rate = conversions / visits; engagements = likes +
--   comments + shares + saves; value_per_follower = follower revenue / follows.
-- * the daily views (roi_by_campaign, spend_vs_return, social_traffic_share, follower_growth,
--   service_savings) read the one-day tumbling windows (window_seconds = 86400); filter
--   periods on window_start (UTC day start). is_final is 1 only when every row summed is final.
-- The formulas are also in sinks/views.py (a unit test checks they match this file).
-- Column names are stable; add columns only in a new migration.
--
-- kpi_campaign_windows: one row per (campaign_id, window_kind, window_seconds, window_start),
--   channels summed: campaign_id, window_kind, window_seconds, window_start, window_end,
--   is_final, channels (rows summed), events, impressions, likes, comments, shares, saves,
--   engagements, clicks, follows, unfollows, net_follower_growth, mentions_positive,
--   mentions_neutral, mentions_negative, service_contacts, service_resolved, visits,
--   reach_sum (sum of per-channel reach: a user seen on two channels counts twice),
--   conversions, revenue, profit, media_spend, effort_spend, tools_spend, spend,
--   service_savings, follower_revenue, engagement_rate, applause_rate, conversation_rate,
--   amplification_rate, ctr, net_sentiment, roi, roi_on_profit, roas, cpa, cpc, cpm,
--   cost_per_engagement, conversion_rate, value_per_follower.
-- kpi_channel_windows: the same per (campaign_id, channel, window_kind, window_seconds,
--   window_start), with channel after campaign_id, no channels column, and reach (exact
--   distinct users of that channel) instead of reach_sum.
-- roi_by_campaign: per (campaign_id, window_start) day: campaign_id, window_start,
--   window_end, is_final, conversions, revenue, profit, media_spend, effort_spend,
--   tools_spend, spend, service_savings, roi, roi_on_profit, roas, cpa.
--   Totals over a period: sum the money columns, then divide (sinks.views.campaign_report).
-- spend_vs_return: campaigns bucketed by their total spend over all stored days, fixed
--   decade buckets in base units (0 = no spend, 1 = < 100, 2 = 100 - 1k, 3 = 1k - 10k,
--   4 = 10k - 100k, 5 = 100k - 1M, 6 = >= 1M; quantiles are approximate and engine-dependent,
--   fixed buckets give the same answer everywhere): spend_bucket, spend_bucket_label,
--   campaigns, campaigns_with_revenue, spend, revenue, profit, service_savings, conversions,
--   revenue_per_campaign, roi, roas. Buckets without campaigns have no row.
-- social_traffic_share: per day: window_start, window_end, is_final, visits (all),
--   social_visits (channel in the social list, = pipeline/normalize.py SOCIAL_CHANNELS,
--   checked by a unit test), direct_visits (campaign '' and channel 'direct': no campaign,
--   no social source), other_visits (the rest: campaigns on non-social channels),
--   social_share = social_visits / visits.
-- follower_growth: per (campaign_id, window_start) day: campaign_id, window_start,
--   window_end, is_final, follows, unfollows, net_follower_growth,
--   cumulative_net_follower_growth (running total from the campaign's first stored day;
--   arrays + ARRAY JOIN because 18.16 has no window functions), follower_revenue,
--   value_per_follower.
-- service_savings: per (campaign_id, window_start) day: campaign_id, window_start,
--   window_end, is_final, service_contacts, service_resolved, resolution_rate,
--   service_savings (resolved contacts x (call-centre cost - social cost), base units).
CREATE VIEW IF NOT EXISTS kpi_campaign_windows AS
SELECT
    campaign_id,
    window_kind,
    window_seconds,
    window_start,
    window_end,
    is_final,
    channels,
    events,
    impressions,
    likes,
    comments,
    shares,
    saves,
    likes + comments + shares + saves AS engagements,
    clicks,
    follows,
    unfollows,
    follows - unfollows AS net_follower_growth,
    mentions_positive,
    mentions_neutral,
    mentions_negative,
    service_contacts,
    service_resolved,
    visits,
    reach_sum,
    conversion_credit_micros / 1000000 AS conversions,
    revenue_micros / 1000000 AS revenue,
    profit_micros / 1000000 AS profit,
    media_spend_micros / 1000000 AS media_spend,
    effort_spend_micros / 1000000 AS effort_spend,
    tools_spend_micros / 1000000 AS tools_spend,
    (media_spend_micros + effort_spend_micros + tools_spend_micros) / 1000000 AS spend,
    service_savings_micros / 1000000 AS service_savings,
    follower_revenue_micros / 1000000 AS follower_revenue,
    if(impressions = 0, NULL, (likes + comments + shares + saves) / impressions) AS engagement_rate,
    if(impressions = 0, NULL, likes / impressions) AS applause_rate,
    if(impressions = 0, NULL, comments / impressions) AS conversation_rate,
    if(impressions = 0, NULL, shares / impressions) AS amplification_rate,
    if(impressions = 0, NULL, clicks / impressions) AS ctr,
    if((mentions_positive + mentions_negative) = 0, NULL, (mentions_positive - mentions_negative) / (mentions_positive + mentions_negative)) AS net_sentiment,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, (revenue_micros + service_savings_micros - (media_spend_micros + effort_spend_micros + tools_spend_micros)) / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roi,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, (profit_micros + service_savings_micros - (media_spend_micros + effort_spend_micros + tools_spend_micros)) / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roi_on_profit,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, revenue_micros / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roas,
    if(conversion_credit_micros = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / conversion_credit_micros) AS cpa,
    if((clicks * 1000000) = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / (clicks * 1000000)) AS cpc,
    if((impressions * 1000) = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / (impressions * 1000)) AS cpm,
    if(((likes + comments + shares + saves) * 1000000) = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / ((likes + comments + shares + saves) * 1000000)) AS cost_per_engagement,
    if((visits * 1000000) = 0, NULL, conversion_credit_micros / (visits * 1000000)) AS conversion_rate,
    if((follows * 1000000) = 0, NULL, follower_revenue_micros / (follows * 1000000)) AS value_per_follower
FROM
(
    SELECT
        campaign_id,
        window_kind,
        window_seconds,
        window_start,
        any(window_end) AS window_end,
        min(is_final) AS is_final,
        count() AS channels,
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
        sum(visits) AS visits,
        sum(service_savings_micros) AS service_savings_micros,
        sum(conversion_credit_micros) AS conversion_credit_micros,
        sum(revenue_micros) AS revenue_micros,
        sum(profit_micros) AS profit_micros,
        sum(media_spend_micros) AS media_spend_micros,
        sum(effort_spend_micros) AS effort_spend_micros,
        sum(tools_spend_micros) AS tools_spend_micros,
        sum(follower_revenue_micros) AS follower_revenue_micros,
        sum(reach) AS reach_sum
    FROM kpi_current
    GROUP BY campaign_id, window_kind, window_seconds, window_start
);
CREATE VIEW IF NOT EXISTS kpi_channel_windows AS
SELECT
    campaign_id,
    channel,
    window_kind,
    window_seconds,
    window_start,
    window_end,
    is_final,
    events,
    impressions,
    likes,
    comments,
    shares,
    saves,
    likes + comments + shares + saves AS engagements,
    clicks,
    follows,
    unfollows,
    follows - unfollows AS net_follower_growth,
    mentions_positive,
    mentions_neutral,
    mentions_negative,
    service_contacts,
    service_resolved,
    visits,
    reach,
    conversion_credit_micros / 1000000 AS conversions,
    revenue_micros / 1000000 AS revenue,
    profit_micros / 1000000 AS profit,
    media_spend_micros / 1000000 AS media_spend,
    effort_spend_micros / 1000000 AS effort_spend,
    tools_spend_micros / 1000000 AS tools_spend,
    (media_spend_micros + effort_spend_micros + tools_spend_micros) / 1000000 AS spend,
    service_savings_micros / 1000000 AS service_savings,
    follower_revenue_micros / 1000000 AS follower_revenue,
    if(impressions = 0, NULL, (likes + comments + shares + saves) / impressions) AS engagement_rate,
    if(impressions = 0, NULL, likes / impressions) AS applause_rate,
    if(impressions = 0, NULL, comments / impressions) AS conversation_rate,
    if(impressions = 0, NULL, shares / impressions) AS amplification_rate,
    if(impressions = 0, NULL, clicks / impressions) AS ctr,
    if((mentions_positive + mentions_negative) = 0, NULL, (mentions_positive - mentions_negative) / (mentions_positive + mentions_negative)) AS net_sentiment,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, (revenue_micros + service_savings_micros - (media_spend_micros + effort_spend_micros + tools_spend_micros)) / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roi,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, (profit_micros + service_savings_micros - (media_spend_micros + effort_spend_micros + tools_spend_micros)) / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roi_on_profit,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, revenue_micros / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roas,
    if(conversion_credit_micros = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / conversion_credit_micros) AS cpa,
    if((clicks * 1000000) = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / (clicks * 1000000)) AS cpc,
    if((impressions * 1000) = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / (impressions * 1000)) AS cpm,
    if(((likes + comments + shares + saves) * 1000000) = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / ((likes + comments + shares + saves) * 1000000)) AS cost_per_engagement,
    if((visits * 1000000) = 0, NULL, conversion_credit_micros / (visits * 1000000)) AS conversion_rate,
    if((follows * 1000000) = 0, NULL, follower_revenue_micros / (follows * 1000000)) AS value_per_follower
FROM kpi_current;
CREATE VIEW IF NOT EXISTS roi_by_campaign AS
SELECT
    campaign_id,
    window_start,
    window_end,
    is_final,
    conversion_credit_micros / 1000000 AS conversions,
    revenue_micros / 1000000 AS revenue,
    profit_micros / 1000000 AS profit,
    media_spend_micros / 1000000 AS media_spend,
    effort_spend_micros / 1000000 AS effort_spend,
    tools_spend_micros / 1000000 AS tools_spend,
    (media_spend_micros + effort_spend_micros + tools_spend_micros) / 1000000 AS spend,
    service_savings_micros / 1000000 AS service_savings,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, (revenue_micros + service_savings_micros - (media_spend_micros + effort_spend_micros + tools_spend_micros)) / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roi,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, (profit_micros + service_savings_micros - (media_spend_micros + effort_spend_micros + tools_spend_micros)) / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roi_on_profit,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, revenue_micros / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roas,
    if(conversion_credit_micros = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / conversion_credit_micros) AS cpa
FROM
(
    SELECT
        campaign_id,
        window_start,
        any(window_end) AS window_end,
        min(is_final) AS is_final,
        sum(service_savings_micros) AS service_savings_micros,
        sum(conversion_credit_micros) AS conversion_credit_micros,
        sum(revenue_micros) AS revenue_micros,
        sum(profit_micros) AS profit_micros,
        sum(media_spend_micros) AS media_spend_micros,
        sum(effort_spend_micros) AS effort_spend_micros,
        sum(tools_spend_micros) AS tools_spend_micros
    FROM kpi_current
    WHERE window_kind = 'tumbling' AND window_seconds = 86400
    GROUP BY campaign_id, window_start
);
CREATE VIEW IF NOT EXISTS spend_vs_return AS
SELECT
    spend_bucket,
    multiIf(
        spend_bucket = 0, 'no spend',
        spend_bucket = 1, '< 100',
        spend_bucket = 2, '100 - 1k',
        spend_bucket = 3, '1k - 10k',
        spend_bucket = 4, '10k - 100k',
        spend_bucket = 5, '100k - 1M',
        '>= 1M'
    ) AS spend_bucket_label,
    campaigns,
    campaigns_with_revenue,
    (media_spend_micros + effort_spend_micros + tools_spend_micros) / 1000000 AS spend,
    revenue_micros / 1000000 AS revenue,
    profit_micros / 1000000 AS profit,
    service_savings_micros / 1000000 AS service_savings,
    conversion_credit_micros / 1000000 AS conversions,
    if(campaigns = 0, NULL, revenue_micros / (campaigns * 1000000)) AS revenue_per_campaign,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, (revenue_micros + service_savings_micros - (media_spend_micros + effort_spend_micros + tools_spend_micros)) / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roi,
    if((media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, NULL, revenue_micros / (media_spend_micros + effort_spend_micros + tools_spend_micros)) AS roas
FROM
(
    SELECT
        spend_bucket,
        count() AS campaigns,
        sum(has_revenue) AS campaigns_with_revenue,
        sum(service_savings_micros) AS service_savings_micros,
        sum(conversion_credit_micros) AS conversion_credit_micros,
        sum(revenue_micros) AS revenue_micros,
        sum(profit_micros) AS profit_micros,
        sum(media_spend_micros) AS media_spend_micros,
        sum(effort_spend_micros) AS effort_spend_micros,
        sum(tools_spend_micros) AS tools_spend_micros
    FROM
    (
        SELECT
            campaign_id,
            multiIf(
                (media_spend_micros + effort_spend_micros + tools_spend_micros) = 0, 0,
                (media_spend_micros + effort_spend_micros + tools_spend_micros) < 100000000, 1,
                (media_spend_micros + effort_spend_micros + tools_spend_micros) < 1000000000, 2,
                (media_spend_micros + effort_spend_micros + tools_spend_micros) < 10000000000, 3,
                (media_spend_micros + effort_spend_micros + tools_spend_micros) < 100000000000, 4,
                (media_spend_micros + effort_spend_micros + tools_spend_micros) < 1000000000000, 5,
                6
            ) AS spend_bucket,
            revenue_micros > 0 AS has_revenue,
            service_savings_micros,
            conversion_credit_micros,
            revenue_micros,
            profit_micros,
            media_spend_micros,
            effort_spend_micros,
            tools_spend_micros
        FROM
        (
            SELECT
                campaign_id,
                sum(service_savings_micros) AS service_savings_micros,
                sum(conversion_credit_micros) AS conversion_credit_micros,
                sum(revenue_micros) AS revenue_micros,
                sum(profit_micros) AS profit_micros,
                sum(media_spend_micros) AS media_spend_micros,
                sum(effort_spend_micros) AS effort_spend_micros,
                sum(tools_spend_micros) AS tools_spend_micros
            FROM kpi_current
            WHERE window_kind = 'tumbling' AND window_seconds = 86400
            GROUP BY campaign_id
        )
    )
    GROUP BY spend_bucket
);
CREATE VIEW IF NOT EXISTS social_traffic_share AS
SELECT
    window_start,
    window_end,
    is_final,
    all_visits AS visits,
    social_visits,
    direct_visits,
    all_visits - social_visits - direct_visits AS other_visits,
    if(all_visits = 0, NULL, social_visits / all_visits) AS social_share
FROM
(
    SELECT
        window_start,
        any(window_end) AS window_end,
        min(is_final) AS is_final,
        sum(visits) AS all_visits,
        sumIf(visits, channel IN ('facebook', 'instagram', 'linkedin', 'pinterest', 'threads', 'tiktok', 'x', 'youtube')) AS social_visits,
        sumIf(visits, campaign_id = '' AND channel = 'direct') AS direct_visits
    FROM kpi_current
    WHERE window_kind = 'tumbling' AND window_seconds = 86400
    GROUP BY window_start
);
CREATE VIEW IF NOT EXISTS follower_growth AS
SELECT
    campaign_id,
    window_start,
    window_end,
    is_final,
    follows,
    unfollows,
    follows - unfollows AS net_follower_growth,
    cumulative_net AS cumulative_net_follower_growth,
    follower_revenue_micros / 1000000 AS follower_revenue,
    if((follows * 1000000) = 0, NULL, follower_revenue_micros / (follows * 1000000)) AS value_per_follower
FROM
(
    SELECT
        campaign_id,
        arraySort(groupArray(window_start)) AS starts,
        arraySort((v, t) -> t, groupArray(window_end), groupArray(window_start)) AS ends,
        arraySort((v, t) -> t, groupArray(is_final), groupArray(window_start)) AS finals,
        arraySort((v, t) -> t, groupArray(follows), groupArray(window_start)) AS follows_by_day,
        arraySort((v, t) -> t, groupArray(unfollows), groupArray(window_start)) AS unfollows_by_day,
        arraySort((v, t) -> t, groupArray(follower_revenue_micros), groupArray(window_start))
            AS revenue_by_day,
        arrayCumSum(arrayMap((f, u) -> f - u, follows_by_day, unfollows_by_day)) AS cumulative
    FROM
    (
        SELECT
            campaign_id,
            window_start,
            any(window_end) AS window_end,
            min(is_final) AS is_final,
            sum(follows) AS follows,
            sum(unfollows) AS unfollows,
            sum(follower_revenue_micros) AS follower_revenue_micros
        FROM kpi_current
        WHERE window_kind = 'tumbling' AND window_seconds = 86400
        GROUP BY campaign_id, window_start
    )
    GROUP BY campaign_id
)
ARRAY JOIN
    starts AS window_start,
    ends AS window_end,
    finals AS is_final,
    follows_by_day AS follows,
    unfollows_by_day AS unfollows,
    revenue_by_day AS follower_revenue_micros,
    cumulative AS cumulative_net;
CREATE VIEW IF NOT EXISTS service_savings AS
SELECT
    campaign_id,
    window_start,
    window_end,
    is_final,
    service_contacts,
    service_resolved,
    if(service_contacts = 0, NULL, service_resolved / service_contacts) AS resolution_rate,
    service_savings_micros / 1000000 AS service_savings
FROM
(
    SELECT
        campaign_id,
        window_start,
        any(window_end) AS window_end,
        min(is_final) AS is_final,
        sum(service_contacts) AS service_contacts,
        sum(service_resolved) AS service_resolved,
        sum(service_savings_micros) AS service_savings_micros
    FROM kpi_current
    WHERE window_kind = 'tumbling' AND window_seconds = 86400
    GROUP BY campaign_id, window_start
);
