{{ config(materialized='view', tags=['staging'], loaded_at_field='_loaded_at') }}

-- Stream and batch transactions in one shape, one row per tx_id.
--
-- When both sides carry a tx_id the stream row wins: it has the status, payment method and
-- anomaly score the file lacks. `source_system` says which side a row came from
-- ('streaming_kafka' or 'batch_file'). `_loaded_at` is when the row landed: a row never changes
-- without landing again (a batch row only leaves, when its stream row lands).

select
    s.tx_id,
    s.user_id,
    s.amount,
    s.currency,
    s.merchant,
    s.category,
    s.event_time,
    s.status,
    s.payment_method,
    s.source_system,
    s.z_score,
    s.is_anomaly,
    s._loaded_at
from {{ ref('stg_transactions_stream') }} as s

union all

select
    b.tx_id,
    b.user_id,
    b.amount,
    b.currency,
    b.merchant,
    b.category,
    b.event_time,
    b.status,
    'unknown'::text as payment_method,
    b.source_system,
    null::double precision as z_score,
    false as is_anomaly,
    b._loaded_at
from {{ ref('stg_transactions_batch') }} as b
where not exists (
    select 1 from {{ ref('stg_transactions_stream') }} as s where s.tx_id = b.tx_id
)
