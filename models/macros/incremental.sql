{#- What the incremental models recompute from: the latest `_loaded_at` they hold, minus
    `incremental_lookback` (a var, 5 minutes by default) for loads that commit out of order.
    `-infinity` when the model is empty. -#}

{#- As a scalar subquery: `where t._loaded_at > {{ incremental_since() }}`. -#}
{% macro incremental_since() -%}
(
              select coalesce(max(_loaded_at), '-infinity'::timestamptz)
                     - interval '{{ var("incremental_lookback", "5 minutes") }}'
              from {{ this }}
          )
{%- endmacro %}

{#- As a CTE of one row and one column `since`: `{{ since_cte('watermark') }},` then
    `where t._loaded_at > (select since from watermark)`. -#}
{% macro since_cte(name='since') -%}
{{ name }} as (
    select coalesce(max(_loaded_at), '-infinity'::timestamptz)
           - interval '{{ var("incremental_lookback", "5 minutes") }}' as since
    from {{ this }}
)
{%- endmacro %}
