INSERT INTO etl.model_runs
    (run_id, model, materialization, status, rows_affected, message, started_at, finished_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
