{{ config(materialized='view') }}

select
    id as order_id,
    user_id as customer_id,
    order_date,
    ordered_at,
    status,
    quantity,
    discount,
    -- integer division, as the seed's integer columns make it
    quantity / 2 as half_quantity
from {{ ref('raw_orders') }}
