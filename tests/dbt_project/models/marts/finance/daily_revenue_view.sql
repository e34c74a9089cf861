select order_date, revenue, revenue_per_order
from {{ ref('daily_revenue') }}
where revenue > 0
