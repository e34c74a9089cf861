{{ config(
    materialized='incremental',
    unique_key='user_id',
    incremental_strategy='delete+insert',
    tags=['intermediate'],
    sql_header='set local jit = off',
    post_hook=[
        "create unique index if not exists int_user_spend_user_id_idx on {{ this }} (user_id)",
        "create index if not exists int_user_spend_window_idx on {{ this }} (first_event_in_window)",
        "{% if not is_incremental() %}analyze {{ this }}{% endif %}",
    ]
) }}

-- Spend per user, one row per user with at least one transaction (any status): the small table
-- top_spenders ranks instead of the fact table.
--
-- * approved_count, total_spend_usd: approved transactions in USD, net of refunds, all time
--   (the sum of the user's months in fct_user_metrics).
-- * approved_count_last_30d, spend_last_30d_usd: the same over the last 30 days of data,
--   (latest − 30 days, latest], where latest is the latest event time of any transaction (any
--   source, any status; see top_spenders), counted from fct_transactions.
-- * first_event_in_window: the user's earliest approved event time in that window; once the
--   window's start moves past it, the user's last-30-days figures change.
-- * last_event_time: the user's latest event time, any status.
-- * `_loaded_at`: the latest `_loaded_at` of the user's transactions.
--
-- Incremental runs (delete+insert on user_id) recompute the users who
--   1. have fct_transactions rows loaded since the last run (the latest `_loaded_at` here minus
--      `incremental_lookback`, see fct_transactions) or lost a transaction to a stream row
--      (int_transactions_superseded),
--   2. have an approved transaction that the moving window has just left behind, and
--   3. everyone, should the window's end ever move back (the latest transaction's stream row
--      replacing its batch row with an earlier event time).
-- A user left without any transaction keeps their row until --full-refresh.

with

-- Every transaction is in one of fct_user_metrics' months.
latest as (
    select max(last_event_time) as latest_event_time
    from {{ ref('fct_user_metrics') }}
),

{% if is_incremental() %}
{{ since_cte() }},

-- `<= 'infinity'` excludes nothing; it makes the planner use the `_loaded_at` index (see
-- fct_transactions).
recomputed_users as (
    select f.user_id
    from {{ ref('fct_transactions') }} as f
    where f._loaded_at > (select since from since)
      and f._loaded_at <= 'infinity'::timestamptz
    union
    select s.previous_user_id
    from {{ ref('int_transactions_superseded') }} as s
    where s._loaded_at > (select since from since)
      and s._loaded_at <= 'infinity'::timestamptz
    union
    select t.user_id
    from {{ this }} as t
    where t.first_event_in_window <= (select latest_event_time - interval '30 days' from latest)
    union
    select t.user_id
    from {{ this }} as t
    where (select latest_event_time from latest) < (select max(last_event_time) from {{ this }})
),
{% endif %}

all_time as (
    select
        m.user_id,
        sum(m.approved_count)::bigint as approved_count,
        sum(m.net_spend_usd) as total_spend_usd,
        max(m.last_event_time) as last_event_time,
        max(m._loaded_at) as _loaded_at
    from {{ ref('fct_user_metrics') }} as m
    {% if is_incremental() %}
    where m.user_id = any(array(select user_id from recomputed_users))
    {% endif %}
    group by m.user_id
),

last_30_days as (
    select
        f.user_id,
        count(*) as approved_count_last_30d,
        sum(f.amount_usd) as spend_last_30d_usd,
        min(f.event_time) as first_event_in_window
    from {{ ref('fct_transactions') }} as f
    cross join latest as l
    where f.status = 'approved'
      and f.event_time > l.latest_event_time - interval '30 days'
      {% if is_incremental() %}
      and f.user_id = any(array(select user_id from recomputed_users))
      {% endif %}
    group by f.user_id
)

select
    a.user_id,
    a.approved_count,
    a.total_spend_usd,
    coalesce(w.approved_count_last_30d, 0) as approved_count_last_30d,
    coalesce(w.spend_last_30d_usd, 0) as spend_last_30d_usd,
    w.first_event_in_window,
    a.last_event_time,
    a._loaded_at
from all_time as a
left join last_30_days as w
    on w.user_id = a.user_id
