-- A user's spending over the last $2 days, stream and batch (a stream row wins over a batch row
-- with the same tx_id), amounts in USD at dim_currencies' rates. $1: user_id, $2: days.
-- Null when the user is in no user file and has no transaction at all.
with rates as (
    select currency_code, rate_to_usd from analytics.dim_currencies
),
profile as (
    select u.first_name || ' ' || u.last_name as name, u.customer_tier as tier, u.city, u.country
    from public.users_raw as u
    where u.user_id = $1
    order by u.registration_date desc, u.loaded_at desc, u.source_line desc
    limit 1
),
tx as (
    select s.tx_id, s.amount, s.currency, s.merchant, s.category, s.event_time, s.status
    from public.transactions_sink as s
    where s.user_id = $1
      and s.event_time >= now() - make_interval(days => $2)
    union all
    select b.tx_id, b.amount, b.currency, b.merchant, b.category, b."timestamp", null
    from public.transactions_batch_raw as b
    where b.user_id = $1
      and b."timestamp" >= now() - make_interval(days => $2)
      and not exists (select 1 from public.transactions_sink as s2 where s2.tx_id = b.tx_id)
),
usd as (
    select tx.*, round(tx.amount * r.rate_to_usd, 2) as amount_usd
    from tx
    join rates as r on r.currency_code = tx.currency
)
select json_build_object(
    'user_id', $1,
    'days', $2,
    'user', (select row_to_json(p) from profile as p),
    'totals', (
        select json_build_object(
            'transaction_count', count(*),
            'total_usd', coalesce(sum(amount_usd), 0)::float8,
            'average_usd', coalesce(round(avg(amount_usd), 2), 0)::float8)
        from usd),
    'currencies', (
        select coalesce(json_agg(c order by c.transaction_count desc, c.currency), '[]')
        from (select currency, count(*) as transaction_count, sum(amount)::float8 as total,
                     sum(amount_usd)::float8 as total_usd
              from usd group by currency) as c),
    'top_categories', (
        select coalesce(json_agg(c order by c.spend_usd desc, c.category), '[]')
        from (select category, sum(amount_usd)::float8 as spend_usd, count(*) as transaction_count
              from usd group by category order by sum(amount_usd) desc, category limit 5) as c),
    'daily', (
        select coalesce(json_agg(d order by d."date"), '[]')
        from (select (event_time at time zone 'UTC')::date as "date", count(*) as transaction_count,
                     sum(amount_usd)::float8 as spend_usd
              from usd group by 1) as d),
    'recent', (
        select coalesce(json_agg(r order by r.event_time desc, r.tx_id), '[]')
        from (select tx_id, event_time, amount::float8 as amount, currency, amount_usd::float8 as amount_usd,
                     merchant, category, status
              from usd order by event_time desc, tx_id limit 10) as r)
)
where exists (select 1 from profile)
   or exists (select 1 from public.transactions_sink where user_id = $1)
   or exists (select 1 from public.transactions_batch_raw where user_id = $1)
