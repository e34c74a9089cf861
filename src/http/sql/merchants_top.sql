-- Merchants ranked by approved revenue in USD between two dates (inclusive), from the
-- daily_merchant_revenue mart; the category is the merchant's primary one (dim_merchants).
-- $1: start date, $2: end date, $3: limit.
select
    r.merchant,
    coalesce(m.primary_category, 'unknown') as category,
    sum(r.revenue_usd)::float8 as revenue_usd,
    sum(r.transaction_count)::int8 as transaction_count,
    round(sum(r.revenue_usd) / nullif(sum(r.transaction_count), 0), 2)::float8 as avg_transaction_usd
from analytics.daily_merchant_revenue as r
left join analytics.dim_merchants as m
    on m.merchant_key = r.merchant_key
where r."date" between $1 and $2
group by r.merchant, m.primary_category
order by revenue_usd desc, r.merchant
limit $3
