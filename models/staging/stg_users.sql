{{ config(materialized='view', tags=['staging'], loaded_at_field='loaded_at') }}

-- One row per user per monthly file, typed, with the file's month as `effective_month`.
--
-- The month comes from the file name (user_registrations_YYYY_MM.csv), not from when the file
-- was loaded: a file loaded late still describes the month it is named after, and that is the
-- business time dim_users versions by. Should a file ever list a user twice, its last line wins
-- (and of two files of the same month, the one whose name sorts last).
--
-- "No later line of the same user and month" rather than DISTINCT ON: a filter on the view (a
-- user, a load time) then reaches the indexes of users_raw, where DISTINCT ON would first sort
-- every user of every file. `loaded_at` is when the line landed; a line never changes without
-- landing again (it only leaves, when a later line for the same month lands).

select
    u.user_id,
    u.first_name,
    u.last_name,
    u.email,
    u.age::integer as age,
    u.income_bracket,
    u.customer_tier,
    u.risk_profile,
    u.city,
    u.state,
    u.country,
    u.registration_date,
    u.preferred_categories,
    u.is_active,
    u.source_system,
    to_date(substring(u.source_file from '(\d{4}_\d{2})\.csv$'), 'YYYY_MM') as effective_month,
    u.source_file,
    u.source_line,
    u.loaded_at
from {{ source('raw', 'users_raw') }} as u
where not exists (
    select 1
    from {{ source('raw', 'users_raw') }} as later
    where later.user_id = u.user_id
      and substring(later.source_file from '(\d{4}_\d{2})\.csv$')
          is not distinct from substring(u.source_file from '(\d{4}_\d{2})\.csv$')
      and (later.source_line, later.source_file) > (u.source_line, u.source_file)
)
