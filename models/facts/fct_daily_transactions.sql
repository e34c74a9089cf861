{{ config(
    materialized='incremental',
    unique_key='date_key',
    incremental_strategy='delete+insert',
    tags=['facts'],
    sql_header='set local jit = off',
    post_hook="{% if not is_incremental() %}analyze {{ this }}{% endif %}"
) }}

-- One row per UTC day and source system ('streaming_kafka', 'batch_file') with at least one
-- transaction. Counts cover every status; money covers approved transactions only, where a
-- refund (negative amount) lowers the day it was made, not the day of the purchase it refunds
-- (nothing links the two). `_loaded_at` is the latest `_loaded_at` of the day's transactions.
--
-- Incremental runs (delete+insert on date_key) rebuild, whole, the days of the fct_transactions
-- rows loaded since the last run (the latest `_loaded_at` here minus `incremental_lookback`, see
-- fct_transactions) and the days those transactions left (int_transactions_superseded). A day
-- that loses its only transaction that way keeps its row until --full-refresh.

with

{% if is_incremental() %}
{{ since_cte() }},

-- `<= 'infinity'` excludes nothing; it makes the planner use the `_loaded_at` index (see
-- fct_transactions).
changed_days as (
    select f.date_key
    from {{ ref('fct_transactions') }} as f
    where f._loaded_at > (select since from since)
      and f._loaded_at <= 'infinity'::timestamptz
    union
    select s.previous_date_key
    from {{ ref('int_transactions_superseded') }} as s
    where s._loaded_at > (select since from since)
      and s._loaded_at <= 'infinity'::timestamptz
),
{% endif %}

transactions as (
    select f.*
    from {{ ref('fct_transactions') }} as f
    {% if is_incremental() %}
    where f.date_key = any(array(select date_key from changed_days))
    {% endif %}
)

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
    count(*) filter (where f.is_anomaly) as anomaly_count,
    max(f._loaded_at) as _loaded_at
from transactions as f
join {{ ref('dim_dates') }} as d
    on d.date_key = f.date_key
group by f.date_key, d."date", f.source_system
