{{ config(
    materialized='incremental',
    unique_key='user_id',
    incremental_strategy='delete+insert',
    loaded_at_field='_loaded_at',
    tags=['dimensions'],
    sql_header='set local jit = off',
    post_hook=[
        "create index if not exists dim_users_user_id_idx on {{ this }} (user_id)",
        "create index if not exists dim_users_user_key_idx on {{ this }} (user_key)",
        "create index if not exists dim_users_loaded_at_idx on {{ this }} (_loaded_at)",
        "{% if not is_incremental() %}analyze {{ this }}{% endif %}",
    ]
) }}

-- Users as a slowly changing dimension (type 2) in business time.
--
-- Business time is the month of the file (stg_users.effective_month): a user gets a new version
-- only when one of the attributes below differs from that user's row in the previous file month
-- that listed them; a restatement without a change, or a month without the user, adds nothing.
-- `effective_to` is the next version's `effective_from` (exclusive), null while current.
--
-- `user_key` is a hash of (user_id, effective_from), not a sequence: the same versions get the
-- same keys whether the table is rebuilt whole or facts resolve against it incrementally, and a
-- version keeps its key when other users or later versions arrive. 60 bits of md5 keep it a
-- positive bigint (so never the unknown member's -1); the unique test guards the (≈1e-7 at a
-- million versions) chance of a collision.
--
-- Facts resolve a transaction to the version effective at its event time, where a user's first
-- version also covers everything before its month: the user existed before the file reported
-- them, and this is what lets late-arriving users replace the unknown member (-1).
--
-- `_loaded_at` is the latest load of any of the user's rows: fct_transactions re-resolves the
-- transactions of users whose history changed after its last run.
--
-- Incremental runs (delete+insert on user_id) rebuild every version of the users with a row
-- loaded since the last run (the latest `_loaded_at` here, minus `incremental_lookback` as in
-- fct_transactions): a user's versions depend on that user's rows only. The unknown member is
-- written again each time.

with

{% if is_incremental() %}
-- `and loaded_at <= 'infinity'` excludes nothing: with it the planner sees a narrow range rather
-- than a third of the table (its guess for "> a value known only at run time") and uses the
-- index on users_raw.loaded_at.
changed_users as (
    select distinct u.user_id
    from {{ ref('stg_users') }} as u
    where u.loaded_at > {{ incremental_since() }}
      and u.loaded_at <= 'infinity'::timestamptz
),
{% endif %}

monthly as (
    select
        *,
        md5(row(
            first_name, last_name, email, age, income_bracket, customer_tier, risk_profile,
            city, state, country, registration_date, preferred_categories, is_active
        )::text) as attributes_hash
    from {{ ref('stg_users') }}
    {% if is_incremental() %}
    where user_id = any(array(select user_id from changed_users))
    {% endif %}
),

compared_with_previous_month as (
    select
        *,
        lag(attributes_hash) over (partition by user_id order by effective_month) as previous_hash,
        max(loaded_at) over (partition by user_id) as user_loaded_at
    from monthly
),

versions as (
    select *
    from compared_with_previous_month
    where previous_hash is null or previous_hash <> attributes_hash
),

dated_versions as (
    select
        *,
        effective_month as effective_from,
        lead(effective_month) over (partition by user_id order by effective_month) as effective_to,
        row_number() over (partition by user_id order by effective_month) as version_number
    from versions
)

select
    ('x' || left(md5(user_id::text || '|' || effective_from::text), 15))::bit(60)::bigint as user_key,
    user_id,
    first_name,
    last_name,
    email,
    age,
    case
        when age < 25 then '18-24'
        when age < 35 then '25-34'
        when age < 45 then '35-44'
        when age < 55 then '45-54'
        when age < 65 then '55-64'
        else '65+'
    end as age_group,
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
    effective_from,
    effective_to,
    effective_to is null as is_current,
    version_number::integer as version_number,
    source_file,
    user_loaded_at as _loaded_at
from dated_versions

union all

-- The unknown member: what a transaction points at until its user arrives in a file.
select
    -1::bigint as user_key,
    '00000000-0000-0000-0000-000000000000'::uuid as user_id,
    'Unknown' as first_name,
    'Unknown' as last_name,
    'unknown' as email,
    null::integer as age,
    'unknown' as age_group,
    'unknown' as income_bracket,
    'unknown' as customer_tier,
    'unknown' as risk_profile,
    'unknown' as city,
    'unknown' as state,
    'unknown' as country,
    null::timestamp as registration_date,
    '{}'::text[] as preferred_categories,
    null::boolean as is_active,
    'unknown' as source_system,
    date '1900-01-01' as effective_from,
    null::date as effective_to,
    true as is_current,
    1 as version_number,
    null::text as source_file,
    null::timestamptz as _loaded_at
