{{ config(materialized='incremental', unique_key='order_date') }}

select
    order_date,
    count(*) as orders,
    count(distinct status) as {{ adapter.quote('Status Count') }},
    sum(amount) as revenue,
    sum(amount) / count(*) as revenue_per_order,
    sum(customer_quantity) / count(*) as quantity_per_order,
    '{{ target.name }}' as target_name,
    '{{ run_started_at.strftime("%Y") }}' <> '' as has_run_year
from {{ ref('orders') }}
{% if is_incremental() %}
where order_date >= (select max(order_date) from {{ this }})
{% endif %}
group by order_date
