-- What incremental models and incremental data tests read: the rows loaded since their last run.
-- transactions_sink has had its index on ingested_at since V1; the batch landing tables get theirs.
CREATE INDEX IF NOT EXISTS transactions_batch_raw_loaded_at_idx ON public.transactions_batch_raw (loaded_at);
CREATE INDEX IF NOT EXISTS users_raw_loaded_at_idx ON public.users_raw (loaded_at);

-- Which rows a data test checked (etl build-models --test-scope changed): 'all', or 'changed'
-- with the load time after which rows were checked; the latest load time it saw per relation
-- ({"analytics.fct_transactions": "…"}), where the next run starts; and the hash of the test's
-- definition those marks belong to. Null for tests that read no model by its loaded_at_field.
ALTER TABLE etl.test_results
    ADD COLUMN scope           text CHECK (scope IN ('all', 'changed')),
    ADD COLUMN checked_since   timestamptz,
    ADD COLUMN watermarks      jsonb,
    ADD COLUMN definition_hash text;
