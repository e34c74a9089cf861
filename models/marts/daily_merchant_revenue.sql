{{ config(materialized='table', tags=['marts']) }}

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

with approved as (
    select d."date", f.merchant_key, f.user_id, f.amount_usd
    from {{ ref('fct_transactions') }} as f
    join {{ ref('dim_dates') }} as d
        on d.date_key = f.date_key
    where f.status = 'approved'
),

per_day as (
    select
        "date",
        merchant_key,
        count(*) as transaction_count,
        sum(amount_usd) as revenue_usd,
        count(distinct user_id) as distinct_users
    from approved
    group by "date", merchant_key
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
    end as dod_growth_pct
from with_history as h
join {{ ref('dim_merchants') }} as m
    on m.merchant_key = h.merchant_key
