{{ config(
    materialized='incremental',
    unique_key=['merchant', 'event_date'],
    incremental_strategy='delete+insert',
    tags=['intermediate'],
    sql_header='set local jit = off',
    post_hook="{% if not is_incremental() %}analyze {{ this }}{% endif %}"
) }}

-- Landed transactions per merchant, category and UTC day of the event: the small table that
-- dim_merchants and dim_categories read instead of every landed row. Both landing tables count
-- as landed (a transaction present in both counts twice, see dim_merchants); `first_seen_at` and
-- `last_seen_at` are the earliest and latest event times, `_loaded_at` the latest load.
--
-- Incremental runs (delete+insert on merchant and day) rebuild, whole, every merchant-day with a
-- row loaded since the last run (the latest `_loaded_at` here minus `incremental_lookback`, see
-- fct_transactions), reading each from the landing tables' (merchant, event time) indexes.

with

{% if is_incremental() %}
-- `<= 'infinity'` excludes nothing; it makes the planner use the load-time indexes (see
-- fct_transactions).
changed as (
    select distinct l.merchant, (l.event_time at time zone 'UTC')::date as event_date
    from (
        select merchant, event_time, _loaded_at from {{ ref('stg_transactions_stream') }}
        union all
        select merchant, event_time, _loaded_at from {{ ref('stg_transactions_batch') }}
    ) as l
    where l._loaded_at > {{ incremental_since() }}
      and l._loaded_at <= 'infinity'::timestamptz
),

-- Each changed merchant-day read on its own (lateral), by index.
landed as (
    select l.*
    from changed as c
    cross join lateral (
        select s.merchant, s.category, s.event_time, s._loaded_at
        from {{ ref('stg_transactions_stream') }} as s
        where s.merchant = c.merchant
          and s.event_time >= c.event_date::timestamp at time zone 'UTC'
          and s.event_time < (c.event_date + 1)::timestamp at time zone 'UTC'
        union all
        select b.merchant, b.category, b.event_time, b._loaded_at
        from {{ ref('stg_transactions_batch') }} as b
        where b.merchant = c.merchant
          and b.event_time >= c.event_date::timestamp at time zone 'UTC'
          and b.event_time < (c.event_date + 1)::timestamp at time zone 'UTC'
    ) as l
)
{% else %}
landed as (
    select merchant, category, event_time, _loaded_at from {{ ref('stg_transactions_stream') }}
    union all
    select merchant, category, event_time, _loaded_at from {{ ref('stg_transactions_batch') }}
)
{% endif %}

select
    l.merchant,
    l.category,
    (l.event_time at time zone 'UTC')::date as event_date,
    count(*) as transactions,
    min(l.event_time) as first_seen_at,
    max(l.event_time) as last_seen_at,
    max(l._loaded_at) as _loaded_at
from landed as l
group by l.merchant, l.category, (l.event_time at time zone 'UTC')::date
