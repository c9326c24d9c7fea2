-- Campaign records drive the figures (campaign.meta): the rule for case, for time and for
-- which campaign a utm_campaign tag belongs to, applied by the views, so it never depends
-- on when a record arrived or how a replay interleaved the topics.
-- * Case: campaign ids and utm_campaign tags are compared trimmed and in lower case on
--   every path (the worker writes panes and credits under that key; older rows are
--   lowered here). A campaign is reported under the id its record declares (its case),
--   or under the key when it has no record.
-- * Time: a campaign's newest record (greatest event_time, then greatest event_id) declares
--   it, for its whole history: a later record replaces the earlier one everywhere, so a
--   correction (a new tag, margin, name or budget) restates past figures too.
-- * Tags: a key that is a campaign's id belongs to that campaign; otherwise a key that
--   campaigns declare as their utm_campaign belongs to the one with the smallest id key;
--   otherwise it is reported as is (a campaign with no record).
-- * Margin: revenue credited from conversions without a margin of their own
--   (unmargined_revenue_micros) takes the credited campaign's declared margin; profit =
--   profit_micros + unmargined x margin, rounded half up to the micro-unit per pane (or
--   composed window) and key. A campaign without a declared margin adds no profit for it.
-- * Reach: when a campaign's rows come from several keys (its id and its tag, or ids in
--   different case written before this migration) their reach is summed. Reach counts
--   social interactions, which carry the campaign's id, so this only matters for such
--   older rows or a social event naming a tag.
-- campaigns: every record as received (ReplacingMergeTree: a replayed record is one row).
--   margin_ppm is the margin in millionths, budget_micros the budget in base-currency
--   micro-units (converted at stage one), starts_ms/ends_ms epoch ms; -1 each when none.
-- campaign_directory: per campaign_key the newest record: campaign_key, campaign_id,
--   campaign_name, utm_campaign, margin (NULL when none), margin_ppm (-1 when none),
--   budget_micros (-1 when none), budget and budget_currency as declared (NULL, '' when
--   none), budget_base (base currency units, NULL when none), starts_ms and ends_ms (-1
--   when none), starts_at and ends_at (DateTime UTC, NULL when none), record_time (the
--   newest record's event_time).
-- campaign_keys (internal): key -> owner, the campaign_key a pane or credit key counts for.
-- kpi_pane_latest (internal): kpi_pane_current of migration 0008 with
--   unmargined_revenue_micros (a new name rather than the view redefined: a migrator
--   still at 0008 could re-create the old definition between the drop and the create).
-- kpi_key_current (internal): kpi_current of migration 0008 (per key), with
--   unmargined_revenue_micros, read from kpi_pane_latest.
-- kpi_current: the same columns as before plus unmargined_revenue_micros, per declared
--   campaign; profit_micros includes the declared margins.
-- roi_by_campaign: as in 0006, plus campaign_name (the record's name; the id when none),
--   budget (base currency units; NULL when none or 0) and budget_used (the day's spend /
--   budget; sum it over a period for the period's budget used; NULL without a budget).
CREATE TABLE IF NOT EXISTS campaigns
(
    campaign_key String,
    campaign_id String,
    name String,
    utm_campaign String,
    margin_ppm Int64,
    budget Float64,
    currency String,
    budget_micros Int64,
    starts_ms Int64,
    ends_ms Int64,
    event_id String,
    event_time_ms Int64,
    written_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (campaign_key, event_time_ms, event_id);

ALTER TABLE kpi_panes ADD COLUMN IF NOT EXISTS unmargined_revenue_micros Int64 DEFAULT 0;

CREATE VIEW IF NOT EXISTS campaign_directory AS
SELECT
    campaign_key,
    argMax(campaign_id, newest) AS campaign_id,
    argMax(name, newest) AS campaign_name,
    argMax(utm_campaign, newest) AS utm_campaign,
    argMax(margin_ppm, newest) AS margin_ppm,
    if(margin_ppm < 0, NULL, margin_ppm / 1000000) AS margin,
    argMax(budget_micros, newest) AS budget_micros,
    if(budget_micros < 0, NULL, argMax(budget, newest)) AS budget,
    argMax(currency, newest) AS budget_currency,
    if(budget_micros < 0, NULL, budget_micros / 1000000) AS budget_base,
    argMax(starts_ms, newest) AS starts_ms,
    argMax(ends_ms, newest) AS ends_ms,
    if(starts_ms < 0, NULL, toDateTime(intDiv(starts_ms, 1000), 'UTC')) AS starts_at,
    if(ends_ms < 0, NULL, toDateTime(intDiv(ends_ms, 1000), 'UTC')) AS ends_at,
    toDateTime(intDiv(max(event_time_ms), 1000), 'UTC') AS record_time
FROM
(
    SELECT
        campaign_key,
        campaign_id,
        name,
        utm_campaign,
        margin_ppm,
        budget,
        currency,
        budget_micros,
        starts_ms,
        ends_ms,
        (event_time_ms, event_id) AS newest,
        event_time_ms
    FROM campaigns
)
GROUP BY campaign_key;

CREATE VIEW IF NOT EXISTS campaign_keys AS
SELECT
    key,
    if(max(is_id) = 1, argMax(owner, is_id), min(owner)) AS owner
FROM
(
    SELECT campaign_key AS key, campaign_key AS owner, 1 AS is_id
    FROM campaign_directory
    UNION ALL
    SELECT utm_campaign AS key, campaign_key AS owner, 0 AS is_id
    FROM campaign_directory
    WHERE utm_campaign != ''
)
GROUP BY key;

CREATE VIEW IF NOT EXISTS kpi_pane_latest AS
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
    argMax(unmargined_revenue_micros, version) AS unmargined_revenue_micros,
    argMax(hopping_seconds, version) AS hopping_seconds,
    argMax(reach_users, version) AS reach_users,
    argMax(reach_codes, version) AS reach_codes,
    argMax(updated_at, version) AS updated_at
FROM kpi_panes
GROUP BY campaign_id, channel, window_kind, window_seconds, window_start;

CREATE VIEW IF NOT EXISTS kpi_key_current AS
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
    unmargined_revenue_micros,
    updated_at
FROM kpi_pane_latest
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
    unmargined_revenue_micros,
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
        sum(unmargined_revenue_micros) AS unmargined_revenue_micros,
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
            unmargined_revenue_micros,
            reach_users,
            reach_codes,
            updated_at
        FROM kpi_pane_latest
        ARRAY JOIN hopping_seconds AS hop_seconds
    )
    GROUP BY campaign_id, channel, hop_seconds, hop_start
);

DROP TABLE IF EXISTS kpi_current;

CREATE VIEW IF NOT EXISTS kpi_current AS
SELECT
    if(declared_id = '', owner_key, declared_id) AS campaign_id,
    channel,
    window_kind,
    window_seconds,
    window_start,
    any(window_end) AS window_end,
    min(is_final) AS is_final,
    sum(version) AS version,
    sum(events) AS events,
    sum(impressions) AS impressions,
    sum(reach) AS reach,
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
    sum(own_profit_micros + if(margin_ppm > 0, intDiv(unmargined_micros, 1000000) * margin_ppm + intDiv(unmargined_micros % 1000000 * margin_ppm + 500000, 1000000), 0)) AS profit_micros,
    sum(media_spend_micros) AS media_spend_micros,
    sum(effort_spend_micros) AS effort_spend_micros,
    sum(tools_spend_micros) AS tools_spend_micros,
    sum(follower_revenue_micros) AS follower_revenue_micros,
    sum(unmargined_micros) AS unmargined_revenue_micros,
    max(updated_at) AS updated_at
FROM
(
    SELECT
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
        profit_micros AS own_profit_micros,
        media_spend_micros,
        effort_spend_micros,
        tools_spend_micros,
        follower_revenue_micros,
        unmargined_revenue_micros AS unmargined_micros,
        updated_at,
        if(owner = '', campaign_key, owner) AS owner_key
    FROM
    (
        SELECT
            lower(campaign_id) AS campaign_key,
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
            unmargined_revenue_micros,
            updated_at
        FROM kpi_key_current
    ) AS by_key
    ANY LEFT JOIN
    (
        SELECT key AS campaign_key, owner FROM campaign_keys
    ) AS key_owners USING campaign_key
) AS by_owner
ANY LEFT JOIN
(
    SELECT campaign_key AS owner_key, campaign_id AS declared_id, margin_ppm FROM campaign_directory
) AS declared USING owner_key
GROUP BY campaign_id, channel, window_kind, window_seconds, window_start;

DROP TABLE IF EXISTS roi_by_campaign;

CREATE VIEW IF NOT EXISTS roi_by_campaign AS
SELECT
    campaign_id,
    if(campaign_name = '', campaign_id, campaign_name) AS campaign_name,
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
    if(conversion_credit_micros = 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / conversion_credit_micros) AS cpa,
    if(budget_micros <= 0, NULL, budget_micros / 1000000) AS budget,
    if(budget_micros <= 0, NULL, (media_spend_micros + effort_spend_micros + tools_spend_micros) / budget_micros) AS budget_used
FROM
(
    SELECT
        campaign_id,
        lower(campaign_id) AS campaign_key,
        window_start,
        any(window_end) AS window_end,
        -- UInt8 on every engine (current ones type kpi_current's is_final Nullable)
        toUInt8(ifNull(min(is_final), 0)) AS is_final,
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
) AS days
ANY LEFT JOIN
(
    SELECT campaign_key, campaign_name, budget_micros FROM campaign_directory
) AS declared USING campaign_key;
