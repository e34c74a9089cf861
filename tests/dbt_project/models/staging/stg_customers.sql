select
    id as customer_id,
    "First_Name" as first_name,
    last_name,
    "First_Name" || ' ' || last_name as full_name,
    signup_date,
    is_vip,
    credit_limit,
    coalesce(country, '{{ env_var("SHOP_DEFAULT_COUNTRY", "US") }}') as country
from {{ ref('raw_customers') }}
