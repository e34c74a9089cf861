{{ config(materialized='table', tags=['dimensions']) }}

-- Currencies accepted by the validators (ARCHITECTURE §4), with their rate to USD from the seed
-- models/seeds/currency_rates.csv. The rates are fixed reference rates (USD 1, EUR 1.08,
-- GBP 1.27, CAD 0.73, AUD 0.66 USD per unit), not market data: every figure in USD is
-- reproducible from the landing tables alone. Change the seed to change them.

select
    upper(trim(currency_code::text)) as currency_code,
    case upper(trim(currency_code::text))
        when 'USD' then 'US dollar'
        when 'EUR' then 'Euro'
        when 'GBP' then 'Pound sterling'
        when 'CAD' then 'Canadian dollar'
        when 'AUD' then 'Australian dollar'
        else upper(trim(currency_code::text))
    end as currency_name,
    rate_to_usd::numeric(18, 6) as rate_to_usd
from {{ ref('currency_rates') }}
