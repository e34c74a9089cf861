{{ config(
    materialized='incremental',
    unique_key=['merchant', 'event_date'],
    incremental_strategy='delete+insert',
    tags=['intermediate']
) }}

-- Landed transactions per merchant, category and UTC day of the event: the small table that
-- dim_merchants and dim_categories read instead of every landed row. Both landing tables count
-- as landed (a transaction present in both counts twice, see dim_merchants); `first_seen_at` and
-- `last_seen_at` are the earliest and latest event times, `_loaded_at` the latest load.
--
-- Incremental runs (delete+insert on merchant and day) rebuild, whole, every merchant-day with a
-- row loaded since the last run (the latest `_loaded_at` here minus `incremental_lookback`, see
-- fct_transactions), reading the landing tables' (merchant, event time) indexes.

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
    where l._loaded_at > (
              select coalesce(max(_loaded_at), '-infinity'::timestamptz)
                     - interval '{{ var("incremental_lookback", "5 minutes") }}'
              from {{ this }}
          )
      and l._loaded_at <= 'infinity'::timestamptz
),
{% endif %}

landed as (
    select merchant, category, event_time, _loaded_at from {{ ref('stg_transactions_stream') }}
    union all
    select merchant, category, event_time, _loaded_at from {{ ref('stg_transactions_batch') }}
)

select
    l.merchant,
    l.category,
    (l.event_time at time zone 'UTC')::date as event_date,
    count(*) as transactions,
    min(l.event_time) as first_seen_at,
    max(l.event_time) as last_seen_at,
    max(l._loaded_at) as _loaded_at
from landed as l
{% if is_incremental() %}
join changed as c
    on c.merchant = l.merchant
   and l.event_time >= c.event_date::timestamp at time zone 'UTC'
   and l.event_time < (c.event_date + 1)::timestamp at time zone 'UTC'
{% endif %}
group by l.merchant, l.category, (l.event_time at time zone 'UTC')::date
