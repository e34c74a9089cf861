-- A known user's transaction points at a version of that same user, effective at its event time
-- (the first version also covering earlier times); the unknown member only while no version
-- exists. Written with joins and a hashed IN, not a correlated EXISTS under OR, which PostgreSQL
-- would run once per fact row.
with known_users as (
    select distinct user_id
    from {{ ref('dim_users') }}
    where user_key <> -1
),

facts_with_versions as (
    select
        f.tx_id,
        f.user_id,
        f.user_key,
        f.event_time,
        d.user_id as version_user_id,
        d.version_number,
        d.effective_from::timestamp at time zone 'UTC' as valid_from,
        d.effective_to::timestamp at time zone 'UTC' as valid_to
    from {{ ref('fct_transactions') }} as f
    left join {{ ref('dim_users') }} as d
        on d.user_key = f.user_key
)

select tx_id, user_id, user_key, event_time
from facts_with_versions
where (user_key = -1 and user_id in (select user_id from known_users))
   or (user_key <> -1 and (
          version_user_id is distinct from user_id
       or (version_number > 1 and event_time < valid_from)
       or event_time >= valid_to))
