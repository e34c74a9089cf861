{{ config(
    materialized='incremental',
    unique_key='date',
    incremental_strategy='delete+insert',
    tags=['marts'],
    sql_header='set local jit = off',
    post_hook="{% if not is_incremental() %}analyze {{ this }}{% endif %}"
) }}

-- Revenue per UTC day and merchant, in USD, over approved transactions from both sources.
--
-- * Net of refunds: a refund is an approved negative amount and counts on the day and at the
--   merchant where it was made (nothing links it to the purchase it refunds). Declined and
--   pending transactions count nowhere, refunds included: a declined refund moved no money.
-- * transaction_count counts approved purchases and refunds alike, so avg_transaction_usd
--   (revenue_usd / transaction_count, to the cent) is the average net amount per transaction.
-- * distinct_users: users with at least one approved transaction that day at that merchant.
-- * rolling_7d_revenue_usd: revenue of the 7 calendar days ending on `date` (days without
--   transactions count as 0, they are not skipped).
-- * dod_growth_pct: 100 × (revenue − revenue of the previous calendar day) / |revenue of the
--   previous day|, to 2 decimals; null when the merchant has no row the day before or that
--   day's revenue is 0. The absolute value keeps the sign meaning "up" after a net-refund day.
-- * `_loaded_at`: the latest `_loaded_at` of the approved transactions counted in the row.
--
-- Incremental runs (delete+insert on date) rebuild, whole, the days with fct_transactions rows
-- loaded since the last run (the latest `_loaded_at` here minus `incremental_lookback`, see
-- fct_transactions) or left by a transaction (int_transactions_superseded), and the six days
-- after each of them, whose rolling 7 days (and, the next day, day-over-day growth) include it.
-- Only the changed days are counted again from the fact table; the windows read the days around
-- them as last built. A day that loses its last approved transaction that way keeps its rows
-- until --full-refresh.

with

{% if is_incremental() %}
{{ since_cte() }},

-- `<= 'infinity'` excludes nothing; it makes the planner use the `_loaded_at` index (see
-- fct_transactions).
changed_days as (
    select d."date", d.date_key
    from {{ ref('dim_dates') }} as d
    where d.date_key in (
        select f.date_key
        from {{ ref('fct_transactions') }} as f
        where f._loaded_at > (select since from since)
          and f._loaded_at <= 'infinity'::timestamptz
        union
        select s.previous_date_key
        from {{ ref('int_transactions_superseded') }} as s
        where s._loaded_at > (select since from since)
          and s._loaded_at <= 'infinity'::timestamptz
    )
),

rebuilt_days as (
    select distinct c."date" + n as "date"
    from changed_days as c
    cross join generate_series(0, 6) as n
),

-- The windows of the rebuilt days reach six days further back.
window_days as (
    select distinct r."date" - n as "date"
    from rebuilt_days as r
    cross join generate_series(0, 6) as n
),
{% endif %}

approved as (
    select d."date", f.merchant_key, f.user_id, f.amount_usd, f._loaded_at
    from {{ ref('fct_transactions') }} as f
    join {{ ref('dim_dates') }} as d
        on d.date_key = f.date_key
    where f.status = 'approved'
    {% if is_incremental() %}
      and f.date_key = any(array(select date_key from changed_days))
    {% endif %}
),

per_day as (
    select
        "date",
        merchant_key,
        count(*) as transaction_count,
        sum(amount_usd) as revenue_usd,
        count(distinct user_id) as distinct_users,
        max(_loaded_at) as _loaded_at
    from approved
    group by "date", merchant_key
    {% if is_incremental() %}

    union all

    -- The unchanged days within the windows, as last built.
    select t."date", t.merchant_key, t.transaction_count, t.revenue_usd, t.distinct_users, t._loaded_at
    from {{ this }} as t
    where t."date" in (select "date" from window_days)
      and t."date" not in (select "date" from changed_days)
    {% endif %}
),

with_history as (
    select
        *,
        sum(revenue_usd) over (
            partition by merchant_key order by "date"
            range between interval '6 days' preceding and current row
        ) as rolling_7d_revenue_usd,
        lag("date") over by_day as previous_date,
        lag(revenue_usd) over by_day as previous_revenue_usd
    from per_day
    window by_day as (partition by merchant_key order by "date")
)

select
    h."date",
    (extract(year from h."date") * 10000 + extract(month from h."date") * 100
        + extract(day from h."date"))::integer as date_key,
    h.merchant_key,
    m.merchant_name as merchant,
    h.transaction_count,
    h.revenue_usd,
    round(h.revenue_usd / h.transaction_count, 2) as avg_transaction_usd,
    h.distinct_users,
    h.rolling_7d_revenue_usd,
    case
        when h.previous_date = h."date" - 1 and h.previous_revenue_usd <> 0
        then round(100 * (h.revenue_usd - h.previous_revenue_usd) / abs(h.previous_revenue_usd), 2)
    end as dod_growth_pct,
    h._loaded_at
from with_history as h
join {{ ref('dim_merchants') }} as m
    on m.merchant_key = h.merchant_key
{% if is_incremental() %}
where h."date" in (select "date" from rebuilt_days)
{% endif %}
