{{ config(tags=['core']) }}

{#- One row per customer with order statistics. -#}
with customers as (
    select * from {{ ref('stg_customers') }}
),

orders as (
    select * from {{ ref('orders') }}
    where amount >= {{ var('min_order_amount') }}
),

customer_orders as (
    select
        customer_id,
        min(order_date) as first_order,
        max(order_date) as most_recent_order,
        count(order_id) as number_of_orders,
        sum(amount) as customer_lifetime_value,
        avg(amount) as average_order_value,
        sum(days_since_launch) as launch_days
    from orders
    group by customer_id
)

select
    customers.customer_id,
    customers.full_name,
    customers.signup_date,
    customers.is_vip,
    customers.credit_limit,
    customers.country,
    customer_orders.first_order,
    customer_orders.most_recent_order,
    coalesce(customer_orders.number_of_orders, 0) as number_of_orders,
    customer_orders.customer_lifetime_value,
    customer_orders.average_order_value,
    customer_orders.launch_days,
    customer_orders.first_order - customers.signup_date as days_to_first_order
from customers
left join customer_orders using (customer_id)
