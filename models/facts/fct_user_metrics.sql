{{ config(materialized='table', tags=['facts']) }}

-- One row per user and calendar month (UTC) in which the user made at least one transaction,
-- known user or not (users not yet in a file are here by user_id; their user_key in
-- fct_transactions is -1 until they arrive). Money is approved transactions only, in USD, net of
-- refunds; counts cover every status.

select
    f.user_id,
    date_trunc('month', f.event_time at time zone 'UTC')::date as month_start,
    count(*) as transaction_count,
    count(*) filter (where f.status = 'approved') as approved_count,
    count(*) filter (where f.status = 'declined') as declined_count,
    count(*) filter (where f.status = 'pending') as pending_count,
    count(*) filter (where f.is_refund) as refund_count,
    coalesce(sum(f.amount_usd) filter (where f.status = 'approved' and not f.is_refund), 0)
        as gross_spend_usd,
    coalesce(-sum(f.amount_usd) filter (where f.status = 'approved' and f.is_refund), 0)
        as refunded_usd,
    coalesce(sum(f.amount_usd) filter (where f.status = 'approved'), 0) as net_spend_usd,
    max(f.amount_usd) filter (where f.status = 'approved') as max_transaction_usd,
    count(distinct f.merchant_key) as distinct_merchants,
    count(*) filter (where f.is_anomaly) as anomaly_count,
    count(*) filter (where f.source_system = 'streaming_kafka') as stream_count,
    count(*) filter (where f.source_system = 'batch_file') as batch_count,
    min(f.event_time) as first_event_time,
    max(f.event_time) as last_event_time
from {{ ref('fct_transactions') }} as f
group by f.user_id, date_trunc('month', f.event_time at time zone 'UTC')::date
