-- The benchmark's users ($1, uuid[]) as one month's user file would land them in users_raw:
-- only their ids matter to the sink (late-arriving or not), the rest is filler.
INSERT INTO public.users_raw (
    user_id, first_name, last_name, email, age, income_bracket, customer_tier, risk_profile,
    city, state, country, registration_date, preferred_categories, is_active, source_system,
    source_file, source_line
)
SELECT u.id, 'Bench', 'User', 'bench-' || u.n || '@example.com', 35, 'medium', 'silver',
       'moderate', 'Austin', 'TX', 'US', '2025-01-01 00:00:00', ARRAY['groceries', 'travel'],
       true, 'third_party_registration', 'bench_users.csv', u.n
FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, n);
