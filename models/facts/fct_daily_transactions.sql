{{ config(materialized='table', tags=['facts']) }}

-- One row per UTC day and source system ('streaming_kafka', 'batch_file') with at least one
-- transaction. Counts cover every status; money covers approved transactions only, where a
-- refund (negative amount) lowers the day it was made, not the day of the purchase it refunds
-- (nothing links the two).

select
    f.date_key,
    d."date",
    f.source_system,
    count(*) as transaction_count,
    count(*) filter (where f.status = 'approved') as approved_count,
    count(*) filter (where f.status = 'declined') as declined_count,
    count(*) filter (where f.status = 'pending') as pending_count,
    count(*) filter (where f.is_refund) as refund_count,
    coalesce(sum(f.amount_usd) filter (where f.status = 'approved' and not f.is_refund), 0)
        as gross_amount_usd,
    coalesce(-sum(f.amount_usd) filter (where f.status = 'approved' and f.is_refund), 0)
        as refunded_amount_usd,
    coalesce(sum(f.amount_usd) filter (where f.status = 'approved'), 0) as net_amount_usd,
    count(distinct f.user_id) as distinct_users,
    count(*) filter (where f.is_anomaly) as anomaly_count
from {{ ref('fct_transactions') }} as f
join {{ ref('dim_dates') }} as d
    on d.date_key = f.date_key
group by f.date_key, d."date", f.source_system
