-- Every order but those still placed has a payment.
select o.order_id
from {{ ref('orders') }} as o
where o.status <> 'placed' and o.amount = 0
