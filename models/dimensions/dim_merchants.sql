{{ config(materialized='table', tags=['dimensions']) }}

-- Every merchant seen in either source. `merchant_key` is a hash of the name, computed the same
-- way in fct_transactions. A merchant's `primary_category` is the category most of its
-- transactions carry (ties: alphabetical), since nothing upstream says what a merchant sells.
-- Counted over the landed rows of both sources (a transaction present in both counts twice):
-- cheaper than the de-duplicated union, and a merchant's category does not hinge on it. The
-- counts come per day from int_merchant_category_days, which keeps them up to date cheaply.

with per_merchant_and_category as (
    select merchant, category, sum(transactions) as transactions, min(first_seen_at) as first_seen_at,
           max(last_seen_at) as last_seen_at
    from {{ ref('int_merchant_category_days') }}
    group by merchant, category
),

ranked as (
    select
        *,
        row_number() over (
            partition by merchant order by transactions desc, category
        ) as category_rank,
        min(first_seen_at) over (partition by merchant) as merchant_first_seen_at,
        max(last_seen_at) over (partition by merchant) as merchant_last_seen_at
    from per_merchant_and_category
)

select
    ('x' || left(md5('merchant|' || merchant), 15))::bit(60)::bigint as merchant_key,
    merchant as merchant_name,
    category as primary_category,
    merchant_first_seen_at as first_seen_at,
    merchant_last_seen_at as last_seen_at
from ranked
where category_rank = 1
