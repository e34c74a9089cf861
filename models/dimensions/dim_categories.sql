{{ config(materialized='table', tags=['dimensions']) }}

-- Spending categories: the closed vocabularies of ARCHITECTURE §3 (batch files) and §4 (stream), plus
-- anything seen in the data that is in neither (channel 'other'), so that every fact row has a
-- category to point at. `category_key` is a hash of the name, computed the same way in
-- fct_transactions, so facts need no join to find it. What the data has is read from
-- int_merchant_category_days (every landed row, counted per merchant, category and day).

with known (category, channel) as (
    values
        ('online_shopping', 'stream'),
        ('food_delivery', 'stream'),
        ('ride_sharing', 'stream'),
        ('streaming_services', 'stream'),
        ('gaming', 'stream'),
        ('social_media', 'stream'),
        ('mobile_apps', 'stream'),
        ('digital_subscriptions', 'stream'),
        ('crypto_trading', 'stream'),
        ('peer_to_peer', 'stream'),
        ('micro_transactions', 'stream'),
        ('instant_transfers', 'stream'),
        ('groceries', 'batch'),
        ('entertainment', 'batch'),
        ('travel', 'batch'),
        ('technology', 'batch'),
        ('fashion', 'batch'),
        ('health', 'batch'),
        ('education', 'batch')
),

observed as (
    select distinct category from {{ ref('int_merchant_category_days') }}
),

all_categories as (
    select category, channel from known
    union all
    select o.category, 'other' from observed as o
    where not exists (select 1 from known as k where k.category = o.category)
)

select
    ('x' || left(md5('category|' || category), 15))::bit(60)::bigint as category_key,
    category as category_name,
    channel,
    initcap(replace(category, '_', ' ')) as display_name
from all_categories
