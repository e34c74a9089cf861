-- What incremental models and incremental data tests read: the rows loaded since their last run.
-- transactions_sink has had its index on ingested_at since V1; the batch landing tables get theirs.
CREATE INDEX IF NOT EXISTS transactions_batch_raw_loaded_at_idx ON public.transactions_batch_raw (loaded_at);
CREATE INDEX IF NOT EXISTS users_raw_loaded_at_idx ON public.users_raw (loaded_at);
