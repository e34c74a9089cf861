-- The $1 newest stream transactions flagged as anomalies.
select tx_id, user_id, amount::float8, currency, merchant, event_time, z_score, user_txn_count
from public.transactions_sink
where is_anomaly
order by event_time desc, tx_id
limit $1
