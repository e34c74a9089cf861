{{ config(materialized='table', tags=['dimensions']) }}

-- Calendar days (UTC) covering the data: whole months from the month of the earliest transaction
-- to the month of the latest, stream or batch. `date_key` is YYYYMMDD as an integer. The bounds
-- come from the landing tables themselves, where an index answers min/max at once.

with bounds as (
    select
        least(
            (select min(event_time) from {{ source('raw', 'transactions_sink') }}),
            (select min("timestamp") from {{ source('raw', 'transactions_batch_raw') }})
        ) as first_event,
        greatest(
            (select max(event_time) from {{ source('raw', 'transactions_sink') }}),
            (select max("timestamp") from {{ source('raw', 'transactions_batch_raw') }})
        ) as last_event
),

days as (
    select generate_series(
        date_trunc('month', first_event at time zone 'UTC'),
        date_trunc('month', last_event at time zone 'UTC') + interval '1 month' - interval '1 day',
        interval '1 day'
    )::date as calendar_date
    from bounds
    where first_event is not null
)

select
    (extract(year from calendar_date) * 10000
        + extract(month from calendar_date) * 100
        + extract(day from calendar_date))::integer as date_key,
    calendar_date as "date",
    extract(year from calendar_date)::integer as year,
    extract(quarter from calendar_date)::integer as quarter,
    extract(month from calendar_date)::integer as month,
    to_char(calendar_date, 'FMMonth') as month_name,
    extract(day from calendar_date)::integer as day_of_month,
    extract(isodow from calendar_date)::integer as day_of_week,
    to_char(calendar_date, 'FMDay') as day_name,
    extract(week from calendar_date)::integer as iso_week,
    extract(isodow from calendar_date) in (6, 7) as is_weekend,
    date_trunc('month', calendar_date)::date as month_start
from days
