{{ config(
    materialized='incremental',
    unique_key='user_id',
    incremental_strategy='delete+insert',
    loaded_at_field='_loaded_at',
    tags=['facts'],
    post_hook=[
        "create index if not exists fct_user_metrics_user_id_idx on {{ this }} (user_id)",
        "create index if not exists fct_user_metrics_loaded_at_idx on {{ this }} (_loaded_at)",
    ]
) }}

-- One row per user and calendar month (UTC) in which the user made at least one transaction,
-- known user or not (users not yet in a file are here by user_id; their user_key in
-- fct_transactions is -1 until they arrive). Money is approved transactions only, in USD, net of
-- refunds; counts cover every status. `_loaded_at` is the latest `_loaded_at` of the month's
-- transactions.
--
-- Incremental runs (delete+insert on user_id) rebuild every month of the users with
-- fct_transactions rows loaded since the last run (the latest `_loaded_at` here minus
-- `incremental_lookback`, see fct_transactions), and of the users whose transaction a stream row
-- took over (int_transactions_superseded). A user who loses their only transaction that way
-- keeps their rows until --full-refresh.

with

{% if is_incremental() %}
since as (
    select coalesce(max(_loaded_at), '-infinity'::timestamptz)
           - interval '{{ var("incremental_lookback", "5 minutes") }}' as since
    from {{ this }}
),

-- `<= 'infinity'` excludes nothing; it makes the planner use the `_loaded_at` index (see
-- fct_transactions).
changed_users as (
    select f.user_id
    from {{ ref('fct_transactions') }} as f
    where f._loaded_at > (select since from since)
      and f._loaded_at <= 'infinity'::timestamptz
    union
    select s.previous_user_id
    from {{ ref('int_transactions_superseded') }} as s
    where s._loaded_at > (select since from since)
      and s._loaded_at <= 'infinity'::timestamptz
),
{% endif %}

transactions as (
    select f.*
    from {{ ref('fct_transactions') }} as f
    {% if is_incremental() %}
    where f.user_id = any(array(select user_id from changed_users))
    {% endif %}
)

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
    max(f.event_time) as last_event_time,
    max(f._loaded_at) as _loaded_at
from transactions as f
group by f.user_id, date_trunc('month', f.event_time at time zone 'UTC')::date
