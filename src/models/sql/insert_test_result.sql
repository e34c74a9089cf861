INSERT INTO etl.test_results
    (run_id, test_name, model, column_name, severity, status, failures, message, started_at, finished_at,
     scope, checked_since, watermarks, definition_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
