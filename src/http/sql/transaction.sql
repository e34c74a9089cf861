-- One transaction by tx_id: the stream's row when there is one, else the batch's, with the user
-- as of the transaction's time (the latest restatement registered by then; before a user's
-- first registration, that first one) and the merchant. $1: tx_id.
with tx as (
    select s.tx_id, s.user_id, s.amount, s.currency, s.merchant, s.category, s.event_time,
           s.status, s.payment_method, s.city, s.country, 'stream'::text as source,
           s.z_score, s.is_anomaly
    from public.transactions_sink as s
    where s.tx_id = $1
    union all
    (select b.tx_id, b.user_id, b.amount, b.currency, b.merchant, b.category, b."timestamp",
            null, null, null, null, 'batch', null, false
     from public.transactions_batch_raw as b
     where b.tx_id = $1
     order by b.loaded_at desc
     limit 1)
    limit 1
)
select
    tx.tx_id, tx.source, tx.amount::float8 as amount, tx.currency, tx.event_time, tx.status,
    tx.payment_method, tx.city, tx.country, tx.z_score, tx.is_anomaly,
    tx.merchant as merchant_name, tx.category as merchant_category,
    tx.user_id, u.user_name, u.customer_tier, u.user_city, u.user_country
from tx
left join lateral (
    select u.first_name || ' ' || u.last_name as user_name, u.customer_tier,
           u.city as user_city, u.country as user_country
    from public.users_raw as u
    where u.user_id = tx.user_id
    order by (u.registration_date <= (tx.event_time at time zone 'UTC')) desc,
             case when u.registration_date <= (tx.event_time at time zone 'UTC')
                  then u.registration_date end desc nulls last,
             u.registration_date, u.loaded_at desc, u.source_line desc
    limit 1
) as u on true
