{% set payment_methods = ['credit_card', 'coupon', 'bank_transfer', 'gift_card'] %}

with orders as (
    select * from {{ ref('stg_orders') }}
),

payments as (
    select * from {{ ref('stg_payments') }}
),

order_payments as (
    select
        order_id,
        {{ amount_by_method(payment_methods, 'amount') }}
        sum(amount) as total_amount,
        {{ cents_to_dollars('sum(amount_cents)', scale=3) }} as total_from_cents
    from payments
    group by order_id
)

select
    orders.order_id,
    orders.customer_id,
    orders.order_date,
    orders.status,
    {% for payment_method in payment_methods -%}
    order_payments.{{ payment_method }}_amount,
    {% endfor -%}
    order_payments.total_amount as amount,
    order_payments.total_from_cents,
    orders.order_date - date '2024-01-01' as days_since_launch,
    orders.order_date + 30 as due_date,
    orders.customer_quantity
from (
    select *, sum(quantity) over (partition by customer_id) as customer_quantity
    from orders
) as orders
left join order_payments on orders.order_id = order_payments.order_id
