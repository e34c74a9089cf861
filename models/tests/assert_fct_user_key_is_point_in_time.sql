-- A known user's transaction points at a version of that same user, effective at its event time
-- (the first version also covering earlier times); the unknown member only while no version
-- exists. Written with joins only: an IN or EXISTS under OR becomes a subplan that PostgreSQL
-- may run once per fact row (it hashes an IN only while the list fits in work_mem).
-- With --test-scope changed: the facts loaded since this test last passed, against every version
-- (a fact is loaded again whenever its user's history changes).
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
        d.effective_to::timestamp at time zone 'UTC' as valid_to,
        k.user_id is not null as user_is_known
    from {{ changed_rows(ref('fct_transactions')) }} as f
    left join {{ ref('dim_users') }} as d
        on d.user_key = f.user_key
    left join known_users as k
        on k.user_id = f.user_id
)

select tx_id, user_id, user_key, event_time
from facts_with_versions
where (user_key = -1 and user_is_known)
   or (user_key <> -1 and (
          version_user_id is distinct from user_id
       or (version_number > 1 and event_time < valid_from)
       or event_time >= valid_to))
