-- Stream transactions flagged as anomalies in the last $1 days, newest first, with the total
-- count of those that match. $2: user_id or null, $3: least |z| or null, $4: limit, $5: offset.
with matching as (
    select s.tx_id, s.user_id, s.amount, s.currency, s.merchant, s.category, s.event_time,
           s.z_score, s.user_txn_count
    from public.transactions_sink as s
    where s.is_anomaly
      and s.event_time >= now() - make_interval(days => $1)
      and ($2::uuid is null or s.user_id = $2)
      and ($3::float8 is null or abs(s.z_score) >= $3)
)
select
    (select count(*) from matching) as total,
    coalesce((
        select json_agg(a order by a.event_time desc, a.tx_id)
        from (
            select tx_id, user_id, amount::float8 as amount, currency, merchant, category,
                   event_time, z_score, user_txn_count,
                   case when abs(z_score) > 6 then 'severe'
                        when abs(z_score) > 4 then 'moderate'
                        else 'mild' end as severity
            from matching
            order by event_time desc, tx_id
            limit $4 offset $5
        ) as a
    ), '[]') as anomalies
