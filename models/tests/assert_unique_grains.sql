-- The compound grains of the aggregates: one row per key combination.
select 'fct_daily_transactions' as model, date_key::text || '/' || source_system as grain
from {{ ref('fct_daily_transactions') }}
group by date_key, source_system having count(*) > 1
union all
select 'fct_user_metrics', user_id::text || '/' || month_start::text
from {{ ref('fct_user_metrics') }}
group by user_id, month_start having count(*) > 1
union all
select 'daily_merchant_revenue', "date"::text || '/' || merchant
from {{ ref('daily_merchant_revenue') }}
group by "date", merchant having count(*) > 1
union all
select 'anomaly_summary', "date"::text || '/' || category
from {{ ref('anomaly_summary') }}
group by "date", category having count(*) > 1
union all
select 'int_merchant_category_days', merchant || '/' || category || '/' || event_date::text
from {{ ref('int_merchant_category_days') }}
group by merchant, category, event_date having count(*) > 1
