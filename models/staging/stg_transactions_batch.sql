{{ config(materialized='view', tags=['staging']) }}

-- Batch transactions from the monthly files.
--
-- The files carry settled transactions only, so every row counts as `approved`; they say nothing
-- about the payment method (null here, 'unknown' once unified) and are never scored for
-- anomalies (the rule of DESIGN §4 is stream only). A tx_id listed in two files (a file re-issued
-- under another name) is kept once: the most recently loaded line wins.

select
    b.tx_id,
    b.user_id,
    b.amount,
    b.currency,
    b.merchant,
    b.category,
    b."timestamp" as event_time,
    'approved'::text as status,
    null::text as payment_method,
    'batch_file'::text as source_system,
    b.source_file,
    b.source_line,
    b.loaded_at as _loaded_at
from {{ source('raw', 'transactions_batch_raw') }} as b
where not exists (
    select 1
    from {{ source('raw', 'transactions_batch_raw') }} as newer
    where newer.tx_id = b.tx_id
      and (newer.loaded_at, newer.source_file, newer.source_line)
        > (b.loaded_at, b.source_file, b.source_line)
)
