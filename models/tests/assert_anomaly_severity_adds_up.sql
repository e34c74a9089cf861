-- Every flagged stream transaction falls in exactly one severity band.
select *
from {{ ref('anomaly_summary') }}
where mild_count + moderate_count + severe_count <> anomaly_count
