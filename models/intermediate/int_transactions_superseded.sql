{{ config(materialized='view', tags=['intermediate']) }}

-- Batch rows that a stream row took over in fct_transactions (the same tx_id: the stream row
-- wins, see stg_transactions_unified), with the time, day and user the transaction had as a batch
-- row.
-- The two rows may disagree on the event time, so the transaction can move to another day (or
-- month, or user): the aggregates that rebuild only what changed rebuild the day it left as well
-- as the day it joined. `_loaded_at` is that of the stream row in fct_transactions, so a filter
-- on it reads the fact's index first and the batch rows by tx_id.

select
    f.tx_id,
    f._loaded_at,
    b.event_time as previous_event_time,
    (extract(year from b.event_time at time zone 'UTC') * 10000
        + extract(month from b.event_time at time zone 'UTC') * 100
        + extract(day from b.event_time at time zone 'UTC'))::integer as previous_date_key,
    b.user_id as previous_user_id
from {{ ref('fct_transactions') }} as f
join {{ ref('stg_transactions_batch') }} as b
    on b.tx_id = f.tx_id
where f.source_system = 'streaming_kafka'
