-- Everything the dashboard shows, in one statement: stream transactions of the last $1 days,
-- optionally of one status ($2), amounts in USD at dim_currencies' rates.
with rates as (
    select currency_code, rate_to_usd from analytics.dim_currencies
),
tx as (
    select s.tx_id, s.user_id, s.amount, s.currency, s.merchant, s.category, s.event_time,
           s.status, s.country, s.is_anomaly, s.z_score,
           round(s.amount * r.rate_to_usd, 2) as amount_usd
    from public.transactions_sink as s
    join rates as r on r.currency_code = s.currency
    where s.event_time >= now() - make_interval(days => $1)
      and ($2::text is null or s.status = $2)
),
minutes as (
    select generate_series(date_trunc('minute', now()) - interval '59 minutes',
                           date_trunc('minute', now()), interval '1 minute') as minute
),
last_hour as (
    select date_trunc('minute', s.event_time) as minute, count(*) as n
    from public.transactions_sink as s
    where s.event_time >= date_trunc('minute', now()) - interval '59 minutes'
      and s.event_time < date_trunc('minute', now()) + interval '1 minute'
      and ($2::text is null or s.status = $2)
    group by 1
)
select json_build_object(
    'generated_at', now(),
    'days', $1,
    'status', coalesce($2, 'all'),
    'kpis', (
        select json_build_object(
            'transactions', count(*),
            'total_usd', coalesce(sum(amount_usd), 0)::float8,
            'average_usd', coalesce(round(avg(amount_usd), 2), 0)::float8,
            'approval_rate', coalesce(round(avg((status = 'approved')::int), 4), 0)::float8,
            'anomaly_rate', coalesce(round(avg(is_anomaly::int), 4), 0)::float8)
        from tx),
    'ingest_per_second', (
        select round(count(*) / 60.0, 2)::float8
        from public.transactions_sink
        where ingested_at >= now() - interval '60 seconds'),
    'per_minute', (
        select json_agg(json_build_object('minute', m.minute, 'count', coalesce(h.n, 0))
                        order by m.minute)
        from minutes as m
        left join last_hour as h on h.minute = m.minute),
    'by_category', (
        select coalesce(json_agg(c order by c.spend_usd desc, c.label), '[]')
        from (select category as label, sum(amount_usd)::float8 as spend_usd, count(*) as count
              from tx group by category) as c),
    'by_country', (
        select coalesce(json_agg(c order by c.spend_usd desc, c.label), '[]')
        from (select coalesce(country, 'unknown') as label, sum(amount_usd)::float8 as spend_usd,
                     count(*) as count
              from tx group by 1) as c),
    'top_merchants', (
        select coalesce(json_agg(c order by c.spend_usd desc, c.label), '[]')
        from (select merchant as label, sum(amount_usd)::float8 as spend_usd, count(*) as count
              from tx group by merchant order by 2 desc, 1 limit 10) as c),
    'anomaly_severity', (
        select json_agg(json_build_object('label', v.label, 'count', coalesce(c.count, 0))
                        order by v.ord)
        from (values (1, 'mild'), (2, 'moderate'), (3, 'severe')) as v(ord, label)
        left join (
            select case when abs(z_score) > 6 then 'severe'
                        when abs(z_score) > 4 then 'moderate'
                        else 'mild' end as label,
                   count(*) as count
            from tx where is_anomaly group by 1
        ) as c on c.label = v.label),
    'latest', (
        select coalesce(json_agg(l order by l.event_time desc, l.tx_id), '[]')
        from (select tx_id, user_id, event_time, amount::float8 as amount, currency,
                     amount_usd::float8 as amount_usd, merchant, category, status, country, is_anomaly
              from tx order by event_time desc, tx_id limit 20) as l),
    'alerts', (
        select coalesce(json_agg(a order by a.event_time desc, a.tx_id), '[]')
        from (select tx_id, user_id, event_time, amount::float8 as amount, currency,
                     amount_usd::float8 as amount_usd, merchant, category, z_score
              from tx where is_anomaly order by event_time desc, tx_id limit 10) as a)
)
