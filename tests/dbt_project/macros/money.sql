{#- Cents as dollars, numeric with `scale` decimals. -#}
{% macro cents_to_dollars(column_name, scale=2) -%}
    ({{ column_name }} / 100)::numeric(16, {{ scale }})
{%- endmacro %}

{# The amount paid with each method, one column per method. #}
{% macro amount_by_method(methods, amount) -%}
    {%- for method in methods %}
        sum(case when payment_method = '{{ method }}' then {{ amount }} else 0 end) as {{ method }}_amount,
    {%- endfor %}
{%- endmacro %}
