select
    id as payment_id,
    order_id,
    payment_method,
    amount_cents,
    {{ cents_to_dollars("amount_cents") }} as amount,
    amount as amount_float,
    paid_at
from {{ ref('raw_payments') }}
