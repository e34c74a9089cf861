-- What the batch tables hold, whatever run loaded it.
select
    (select count(*) from public.users_raw),
    (select count(*) from public.transactions_batch_raw),
    (select count(*) from etl.batch_rejects)
