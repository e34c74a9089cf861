-- The $1 merchants with the most approved revenue in USD on the last day the mart has.
select r."date", r.merchant, sum(r.revenue_usd)::float8, sum(r.transaction_count)::int8
from analytics.daily_merchant_revenue as r
where r."date" = (select max("date") from analytics.daily_merchant_revenue)
group by r."date", r.merchant
order by 3 desc, r.merchant
limit $1
