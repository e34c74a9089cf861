-- A known user's transaction points at a version of that same user, effective at its event time
-- (the first version also covering earlier times); an unknown member means no version exists.
select f.tx_id, f.user_id, f.user_key, f.event_time
from {{ ref('fct_transactions') }} as f
left join {{ ref('dim_users') }} as d
    on d.user_key = f.user_key
where (f.user_key = -1 and exists (
          select 1 from {{ ref('dim_users') }} as known
          where known.user_id = f.user_id and known.user_key <> -1))
   or (f.user_key <> -1 and (
          d.user_id is distinct from f.user_id
       or (d.version_number > 1 and f.event_time < d.effective_from::timestamp at time zone 'UTC')
       or f.event_time >= d.effective_to::timestamp at time zone 'UTC'))
