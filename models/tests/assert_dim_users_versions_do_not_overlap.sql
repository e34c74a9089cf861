-- A user's versions tile business time: no two overlap, each ends where the next begins, and
-- exactly the last one is current. (With --test-scope changed: the users loaded since this test
-- last passed; all of a user's versions share the user's `_loaded_at`.)
with ordered as (
    select
        user_id,
        user_key,
        effective_from,
        effective_to,
        is_current,
        lead(effective_from) over (partition by user_id order by effective_from) as next_from
    from {{ changed_rows(ref('dim_users')) }} as d
    where user_key <> -1
)
select *
from ordered
where effective_to is distinct from next_from
   or effective_to <= effective_from
   or is_current <> (next_from is null)
