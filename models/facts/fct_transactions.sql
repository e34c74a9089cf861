{{ config(
    materialized='incremental',
    unique_key='tx_id',
    incremental_strategy='delete+insert',
    loaded_at_field='_loaded_at',
    tags=['facts'],
    sql_header='set local jit = off',
    post_hook=[
        "create index if not exists fct_transactions_tx_id_idx on {{ this }} (tx_id)",
        "create index if not exists fct_transactions_loaded_at_idx on {{ this }} (_loaded_at)",
        "create index if not exists fct_transactions_date_key_idx on {{ this }} (date_key)",
        "create index if not exists fct_transactions_user_time_idx on {{ this }} (user_id, event_time)",
        "create index if not exists fct_transactions_unknown_user_idx on {{ this }} (user_id) where user_key = -1",
        "{% if not is_incremental() %}analyze {{ this }}{% endif %}",
    ]
) }}

-- One row per transaction (stream wins over batch on the same tx_id), with a key to every
-- dimension and the amount in USD.
--
-- * user_key: the dim_users version effective at the event time (point in time); a user's first
--   version also covers earlier times (see dim_users). No user yet: the unknown member, -1.
-- * date_key: the UTC calendar day of the event time, for stream and batch rows alike (a batch
--   row's date is that of its own timestamp, not of its file's month or of its load).
-- * merchant_key, category_key: the same name hashes dim_merchants and dim_categories use.
-- * amount_usd: amount × rate_to_usd, rounded to cents per transaction (half away from zero);
--   refunds stay negative.
--
-- Incremental runs (delete+insert on tx_id) rebuild the rows that
--   1. landed since the last run (stream rows that replace a batch row included),
--   2. belong to a user whose history changed since the last run, which both re-resolves the
--      unknown member (-1) once a user arrives and moves transactions to a newer version, and
--   3. still point at the unknown member although their user is now known (belt and braces for
--      loads that committed out of order).
-- `_loaded_at` is the later of the row's landing and its user's latest load, so that it depends
-- on the data only and an incremental run writes exactly what a full refresh would; the
-- watermark is its maximum. `incremental_lookback` (default 5 minutes) re-reads rows whose load
-- committed after a later-started one. Rows deleted from the landing tables (a batch file
-- reloaded with fewer lines) leave only with --full-refresh.
--
-- The indexes (post_hook) serve the incremental runs here and downstream: tx_id for the
-- delete+insert, `_loaded_at` for the watermark and for what changed since a model's last run,
-- date_key and (user_id, event_time) for the aggregates that rebuild the days, user-months and
-- 30-day windows that changed, and the unknown member's rows for their re-resolution. After a
-- full build, `analyze` gives the next incremental run statistics to plan with (autovacuum may
-- not have come by yet); the other models that incremental runs read do the same.

with

{% if is_incremental() %}
{{ since_cte('watermark') }},

users_changed_since_last_run as (
    select distinct user_id
    from {{ ref('dim_users') }}
    where _loaded_at > (select since from watermark)
      and _loaded_at <= 'infinity'::timestamptz
),

unknown_members_now_known as (
    select f.tx_id
    from {{ this }} as f
    where f.user_key = -1
      and exists (
          select 1 from {{ ref('dim_users') }} as d
          where d.user_id = f.user_id and d.user_key <> -1
      )
),
{% endif %}

-- Candidates as a union of three narrow reads rather than one scan with `IN (…) OR IN (…)`:
-- PostgreSQL turns an IN under OR into a subplan it runs once per row as soon as the list
-- outgrows work_mem (a month of restated users is enough). Each read is shaped for an index of
-- the landing tables:
-- * `_loaded_at <= 'infinity'` excludes nothing, but with it the planner sees a narrow range
--   rather than a third of the table (its guess for "> a value known only at run time") and
--   reads the load-time indexes instead of scanning;
-- * `= any(array(…))` is planned as a handful of values, so the user and tx_id indexes are
--   read once per value.
transactions as (
    select t.*
    from {{ ref('stg_transactions_unified') }} as t
    {% if is_incremental() %}
    where t._loaded_at > (select since from watermark)
      and t._loaded_at <= 'infinity'::timestamptz

    union

    select t.*
    from {{ ref('stg_transactions_unified') }} as t
    where t.user_id = any(array(select user_id from users_changed_since_last_run))

    union

    select t.*
    from {{ ref('stg_transactions_unified') }} as t
    where t.tx_id = any(array(select tx_id from unknown_members_now_known))
    {% endif %}
),

user_versions as (
    select
        user_key,
        user_id,
        version_number,
        effective_from::timestamp at time zone 'UTC' as valid_from,
        effective_to::timestamp at time zone 'UTC' as valid_to,
        _loaded_at
    from {{ ref('dim_users') }}
    where user_key <> -1
),

point_in_time as (
    select
        t.*,
        v.user_key,
        v._loaded_at as user_loaded_at
    from transactions as t
    left join user_versions as v
        on v.user_id = t.user_id
       and (v.version_number = 1 or t.event_time >= v.valid_from)
       and (v.valid_to is null or t.event_time < v.valid_to)
)

select
    p.tx_id,
    (extract(year from p.event_time at time zone 'UTC') * 10000
        + extract(month from p.event_time at time zone 'UTC') * 100
        + extract(day from p.event_time at time zone 'UTC'))::integer as date_key,
    coalesce(p.user_key, -1) as user_key,
    p.user_id,
    ('x' || left(md5('merchant|' || p.merchant), 15))::bit(60)::bigint as merchant_key,
    ('x' || left(md5('category|' || p.category), 15))::bit(60)::bigint as category_key,
    p.currency as currency_code,
    p.amount,
    round(p.amount * c.rate_to_usd, 2)::numeric(16, 2) as amount_usd,
    p.amount < 0 as is_refund,
    p.status,
    p.payment_method,
    p.source_system,
    p.event_time,
    p.z_score,
    p.is_anomaly,
    greatest(p._loaded_at, p.user_loaded_at) as _loaded_at
from point_in_time as p
left join {{ ref('dim_currencies') }} as c
    on c.currency_code = p.currency
