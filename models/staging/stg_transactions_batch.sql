{{ config(materialized='view', tags=['staging']) }}

-- Batch transactions from the monthly files.
--
-- The files carry settled transactions only, so every row counts as `approved`; they say nothing
-- about the payment method (null here, 'unknown' once unified) and are never scored for
-- anomalies (the rule of ARCHITECTURE §4 is stream only).
--
-- No de-duplication here: the loader is idempotent per file, so a tx_id twice means two files
-- carry the same transaction, which is a data problem to look at, not to hide. The unique tests
-- on stg_transactions_unified and fct_transactions fail loudly when it happens. (A per-row
-- "newest wins" anti-join cost a third of the fact build on a million rows.)

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
