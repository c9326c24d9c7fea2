-- Credits under the declared campaign, and direct traffic out of the spend levels.
-- * credited_conversions gets unmargined_revenue_micros: the credited revenue of a
--   conversion without a margin of its own (its profit_micros is 0); rows written before
--   this migration have 0 there, so a declared margin adds no profit to them.
-- * The credits as readers see them: the table keeps what stage one wrote (the campaign
--   key in lower case, and only the conversion's own profit); the view below applies the
--   rules of migration 0010 (case, time, tags, margin) when it is read.
-- credited_conversions_current: one row per (model, conversion_event_id, touch_event_id):
--   model, conversion_event_id, order_id, user_id, conversion_time, campaign_id (the declared campaign: its record's
--   id, else the key), campaign_name (the record's name; the id when none), campaign_key
--   (the key the credit was written under: an id or a utm_campaign tag, lower case),
--   channel, touch_event_id, touch_type, touch_time, share_micros, revenue_micros,
--   profit_micros (the conversion's own profit share, or unmargined_revenue_micros x the
--   declared campaign's margin, rounded half up to the micro-unit per row; 0 without a
--   declared margin), unmargined_revenue_micros.
-- spend_vs_return: as in 0006, without campaign '' (direct traffic and sales with no
--   touchpoint are no campaign: they have no spend level, as the report's campaign count
--   leaves them out too).
ALTER TABLE credited_conversions ADD COLUMN IF NOT EXISTS unmargined_revenue_micros Int64 DEFAULT 0;

CREATE VIEW IF NOT EXISTS credited_conversions_current AS
SELECT
    model,
    conversion_event_id,
    order_id,
    user_id,
    conversion_time,
    if(declared_id = '', owner_key, declared_id) AS campaign_id,
    if(campaign_name = '', if(declared_id = '', owner_key, declared_id), campaign_name) AS campaign_name,
    campaign_key,
    channel,
    touch_event_id,
    touch_type,
    touch_time,
    share_micros,
    revenue_micros,
    own_profit_micros + if(margin_ppm > 0, intDiv(unmargined_micros, 1000000) * margin_ppm + intDiv(unmargined_micros % 1000000 * margin_ppm + 500000, 1000000), 0) AS profit_micros,
    unmargined_micros AS unmargined_revenue_micros
FROM
(
    SELECT
        model,
        conversion_event_id,
        order_id,
        user_id,
        conversion_time,
        campaign_key,
        channel,
        touch_event_id,
        touch_type,
        touch_time,
        share_micros,
        revenue_micros,
        own_profit_micros,
        unmargined_micros,
        if(owner = '', campaign_key, owner) AS owner_key
    FROM
    (
        SELECT
            model,
            conversion_event_id,
            touch_event_id,
            argMax(order_id, version) AS order_id,
            argMax(user_id, version) AS user_id,
            argMax(conversion_time, version) AS conversion_time,
            lower(argMax(campaign_id, version)) AS campaign_key,
            argMax(channel, version) AS channel,
            argMax(touch_type, version) AS touch_type,
            argMax(touch_time, version) AS touch_time,
            argMax(share_micros, version) AS share_micros,
            argMax(revenue_micros, version) AS revenue_micros,
            argMax(profit_micros, version) AS own_profit_micros,
            argMax(unmargined_revenue_micros, version) AS unmargined_micros
        FROM credited_conversions
        GROUP BY model, conversion_event_id, touch_event_id
    ) AS credits
    ANY LEFT JOIN
    (
        SELECT key AS campaign_key, owner FROM campaign_keys
    ) AS key_owners USING campaign_key
) AS by_owner
ANY LEFT JOIN
(
    SELECT campaign_key AS owner_key, campaign_id AS declared_id, campaign_name, margin_ppm FROM campaign_directory
) AS declared USING owner_key;

DROP TABLE IF EXISTS spend_vs_return;

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
            WHERE window_kind = 'tumbling' AND window_seconds = 86400 AND campaign_id != ''
            GROUP BY campaign_id
        )
    )
    GROUP BY spend_bucket
);
