{{ config(materialized='view', tags=['staging']) }}

-- Stream transactions as the sink landed them: already validated (ARCHITECTURE §4) and unique per
-- tx_id, so staging only renames and selects. `_loaded_at` (when the sink wrote the row) is what
-- incremental models filter on; `event_time` is business time.

select
    tx_id,
    user_id,
    amount,
    currency,
    merchant,
    category,
    event_time,
    status,
    payment_method,
    city,
    country,
    -- The message's own source_system is free text; which landing table a row came from is not.
    'streaming_kafka'::text as source_system,
    transaction_type,
    processing_time_ms,
    kafka_partition,
    kafka_offset,
    user_txn_count,
    z_score,
    is_anomaly,
    ingested_at as _loaded_at
from {{ source('raw', 'transactions_sink') }}
