{{ config(
    materialized='table',
    tags=['marts'],
    sql_header='set local jit = off',
    post_hook=[
        "create unique index if not exists top_spenders_user_id_idx on {{ this }} (user_id)",
        "create unique index if not exists top_spenders_user_key_idx on {{ this }} (user_key)",
    ]
) }}

-- Every known user (current dim_users version; not the unknown member) ranked by approved spend
-- in USD, net of refunds, over all time and over the last 30 days of data.
--
-- * "Last 30 days" is (latest − 30 days, latest], where latest is the latest event time of any
--   transaction in fct_transactions (any source, any status), so results depend on the data, not
--   on when the model runs.
-- * Ranks use rank(): equal spend, equal rank, and the next rank skips. Users without approved
--   transactions spend 0 and share the last rank; net-refund users rank below them.
-- * Spend counts all of a user's transactions whatever version they resolved to; transactions
--   of users not yet in any file are not here until the user arrives.
-- * The figures per user come from int_user_spend, which keeps them up to date without reading
--   the whole fact table; only the ranks are computed here, over every user, each time.
-- * One row per user and per user key, enforced by unique indexes (post_hook): the unique tests
--   of schema.yml then pass without reading the table, and a duplicate fails the build.

with latest as (
    select max(last_event_time) as latest_event_time
    from {{ ref('fct_user_metrics') }}
),

spend as (
    select user_id, approved_count, total_spend_usd, approved_count_last_30d, spend_last_30d_usd
    from {{ ref('int_user_spend') }}
),

current_users as (
    select user_id, user_key, first_name, last_name, customer_tier
    from {{ ref('dim_users') }}
    where is_current and user_key <> -1
),

per_user as (
    select
        u.user_id,
        u.user_key,
        u.first_name,
        u.last_name,
        u.first_name || ' ' || u.last_name as full_name,
        u.customer_tier,
        coalesce(s.approved_count, 0) as approved_count,
        coalesce(s.total_spend_usd, 0) as total_spend_usd,
        coalesce(s.approved_count_last_30d, 0) as approved_count_last_30d,
        coalesce(s.spend_last_30d_usd, 0) as spend_last_30d_usd
    from current_users as u
    left join spend as s
        on s.user_id = u.user_id
)

select
    *,
    rank() over (order by total_spend_usd desc) as spend_rank,
    rank() over (order by spend_last_30d_usd desc) as spend_rank_last_30d,
    (select latest_event_time from latest) as latest_event_time
from per_user
