{{ config(materialized='view', tags=['staging']) }}

-- One row per user per monthly file, typed, with the file's month as `effective_month`.
--
-- The month comes from the file name (user_registrations_YYYY_MM.csv), not from when the file
-- was loaded: a file loaded late still describes the month it is named after, and that is the
-- business time dim_users versions by. Should a file ever list a user twice, its last line wins.

with landed as (
    select
        u.*,
        to_date(substring(u.source_file from '(\d{4}_\d{2})\.csv$'), 'YYYY_MM') as file_month
    from {{ source('raw', 'users_raw') }} as u
),

last_line_per_user_and_month as (
    select distinct on (user_id, file_month) *
    from landed
    order by user_id, file_month, source_line desc
)

select
    user_id,
    first_name,
    last_name,
    email,
    age::integer as age,
    income_bracket,
    customer_tier,
    risk_profile,
    city,
    state,
    country,
    registration_date,
    preferred_categories,
    is_active,
    source_system,
    file_month as effective_month,
    source_file,
    source_line,
    loaded_at
from last_line_per_user_and_month
