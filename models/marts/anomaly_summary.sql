{{ config(
    materialized='incremental',
    unique_key='date',
    incremental_strategy='delete+insert',
    tags=['marts'],
    sql_header='set local jit = off',
    post_hook="{% if not is_incremental() %}analyze {{ this }}{% endif %}"
) }}

-- Stream anomalies per UTC day and category: one row for every day and category with at least
-- one stream transaction, zeros (and null z statistics) where nothing was flagged.
--
-- * Anomalies are the sink's `is_anomaly` flags (|z| > 3 per ARCHITECTURE §4), every status included:
--   the rule scores each distinct transaction, approved or not. Batch rows are never scored.
-- * flagged_amount_usd: the signed USD sum of the flagged transactions.
-- * Severity by |z| of the flagged rows: mild (3, 4], moderate (4, 6], severe above 6.
-- * `_loaded_at`: the latest `_loaded_at` of the day's stream transactions in the category.
--
-- Incremental runs (delete+insert on date) rebuild, whole, the days of the stream rows of
-- fct_transactions loaded since the last run (the latest `_loaded_at` here minus
-- `incremental_lookback`, see fct_transactions). Stream rows never leave the fact table, so no
-- day loses a row.

with

{% if is_incremental() %}
-- `<= 'infinity'` excludes nothing; it makes the planner use the `_loaded_at` index (see
-- fct_transactions).
changed_days as (
    select distinct f.date_key
    from {{ ref('fct_transactions') }} as f
    where f._loaded_at > {{ incremental_since() }}
      and f._loaded_at <= 'infinity'::timestamptz
      and f.source_system = 'streaming_kafka'
),
{% endif %}

stream as (
    select
        d."date", f.category_key, f.user_id, f.amount_usd, f.is_anomaly, abs(f.z_score) as abs_z,
        f._loaded_at
    from {{ ref('fct_transactions') }} as f
    join {{ ref('dim_dates') }} as d
        on d.date_key = f.date_key
    where f.source_system = 'streaming_kafka'
    {% if is_incremental() %}
      and f.date_key = any(array(select date_key from changed_days))
    {% endif %}
)

select
    s."date",
    (extract(year from s."date") * 10000 + extract(month from s."date") * 100
        + extract(day from s."date"))::integer as date_key,
    s.category_key,
    c.category_name as category,
    count(*) as transaction_count,
    count(*) filter (where s.is_anomaly) as anomaly_count,
    count(distinct s.user_id) filter (where s.is_anomaly) as affected_users,
    coalesce(sum(s.amount_usd) filter (where s.is_anomaly), 0) as flagged_amount_usd,
    avg(s.abs_z) filter (where s.is_anomaly) as avg_abs_z,
    max(s.abs_z) filter (where s.is_anomaly) as max_abs_z,
    count(*) filter (where s.is_anomaly and s.abs_z > 3 and s.abs_z <= 4) as mild_count,
    count(*) filter (where s.is_anomaly and s.abs_z > 4 and s.abs_z <= 6) as moderate_count,
    count(*) filter (where s.is_anomaly and s.abs_z > 6) as severe_count,
    max(s._loaded_at) as _loaded_at
from stream as s
join {{ ref('dim_categories') }} as c
    on c.category_key = s.category_key
group by s."date", s.category_key, c.category_name
