{{ config(
    materialized='incremental',
    unique_key='user_id',
    incremental_strategy='delete+insert',
    tags=['facts'],
    sql_header='set local jit = off',
    post_hook=[
        "create unique index if not exists fct_user_metrics_user_month_idx on {{ this }} (user_id, month_start)",
        "create index if not exists fct_user_metrics_last_event_idx on {{ this }} (last_event_time)",
        "{% if not is_incremental() %}analyze {{ this }}{% endif %}",
    ]
) }}

-- One row per user and calendar month (UTC) in which the user made at least one transaction,
-- known user or not (users not yet in a file are here by user_id; their user_key in
-- fct_transactions is -1 until they arrive). Money is approved transactions only, in USD, net of
-- refunds; counts cover every status. `_loaded_at` is the latest `_loaded_at` of the month's
-- transactions. A unique index (post_hook) keeps one row per user and month; it also serves the
-- incremental runs, which replace a user's rows whole.
--
-- Incremental runs (delete+insert on user_id) rewrite the users with fct_transactions rows
-- loaded since the last run (the latest `_loaded_at` here minus `incremental_lookback`, see
-- fct_transactions), or whose transaction a stream row took over (int_transactions_superseded,
-- which may move it to another month or user): the months those rows are in are counted again
-- from the fact table, the users' other months are written back as they were. A month left
-- empty that way goes; a user left without any transaction keeps their rows until
-- --full-refresh.

with

{% if is_incremental() %}
{{ since_cte() }},

-- `<= 'infinity'` excludes nothing; it makes the planner use the `_loaded_at` index (see
-- fct_transactions).
changed_months as (
    select f.user_id, date_trunc('month', f.event_time at time zone 'UTC')::date as month_start
    from {{ ref('fct_transactions') }} as f
    where f._loaded_at > (select since from since)
      and f._loaded_at <= 'infinity'::timestamptz
    union
    select s.previous_user_id, date_trunc('month', s.previous_event_time at time zone 'UTC')::date
    from {{ ref('int_transactions_superseded') }} as s
    where s._loaded_at > (select since from since)
      and s._loaded_at <= 'infinity'::timestamptz
),

-- Each changed user-month read on its own (lateral), by the (user_id, event_time) index.
transactions as (
    select f.*
    from changed_months as c
    cross join lateral (
        select *
        from {{ ref('fct_transactions') }} as t
        where t.user_id = c.user_id
          and t.event_time >= c.month_start::timestamp at time zone 'UTC'
          and t.event_time < (c.month_start + interval '1 month')::timestamp at time zone 'UTC'
    ) as f
),
{% else %}
transactions as (
    select * from {{ ref('fct_transactions') }}
),
{% endif %}

per_month as (
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
)

select * from per_month
{% if is_incremental() %}

union all

-- The other months of the same users, as they were: delete+insert replaces a user's rows whole.
select
    t.user_id, t.month_start, t.transaction_count, t.approved_count, t.declined_count,
    t.pending_count, t.refund_count, t.gross_spend_usd, t.refunded_usd, t.net_spend_usd,
    t.max_transaction_usd, t.distinct_merchants, t.anomaly_count, t.stream_count, t.batch_count,
    t.first_event_time, t.last_event_time, t._loaded_at
from {{ this }} as t
where t.user_id = any(array(select user_id from changed_months))
  and not exists (
      select 1 from changed_months as c
      where c.user_id = t.user_id and c.month_start = t.month_start
  )
{% endif %}
