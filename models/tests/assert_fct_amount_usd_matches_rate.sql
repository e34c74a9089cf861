-- Every fact's amount_usd is its amount at the currency's rate, to the cent. (With
-- --test-scope changed: every fact loaded since this test last passed.)
select f.tx_id, f.amount, f.currency_code, f.amount_usd, c.rate_to_usd
from {{ changed_rows(ref('fct_transactions')) }} as f
join {{ ref('dim_currencies') }} as c
    on c.currency_code = f.currency_code
where f.amount_usd <> round(f.amount * c.rate_to_usd, 2)
