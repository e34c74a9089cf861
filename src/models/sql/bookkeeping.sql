-- The bookkeeping `etl build-models` needs in a database that is not etl's own (a dbt
-- project's): the run history, and nothing else — no landing tables, no refinery history.
-- The same tables as migrations V1 and V2 create, so etl's own database never runs this.
CREATE SCHEMA IF NOT EXISTS etl;

CREATE TABLE IF NOT EXISTS etl.model_runs (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          uuid        NOT NULL,
    model           text        NOT NULL,
    materialization text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('success', 'error', 'skipped')),
    rows_affected   bigint,
    message         text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS model_runs_run_idx ON etl.model_runs (run_id);
CREATE INDEX IF NOT EXISTS model_runs_model_idx ON etl.model_runs (model, started_at DESC);

CREATE TABLE IF NOT EXISTS etl.test_results (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          uuid        NOT NULL,
    test_name       text        NOT NULL,
    model           text,
    column_name     text,
    severity        text        NOT NULL CHECK (severity IN ('warn', 'error')),
    status          text        NOT NULL CHECK (status IN ('pass', 'warn', 'fail', 'error', 'skipped')),
    failures        bigint,
    message         text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    scope           text CHECK (scope IN ('all', 'changed')),
    checked_since   timestamptz,
    watermarks      jsonb,
    definition_hash text
);
CREATE INDEX IF NOT EXISTS test_results_run_idx ON etl.test_results (run_id);
CREATE INDEX IF NOT EXISTS test_results_test_idx ON etl.test_results (test_name, started_at DESC);
