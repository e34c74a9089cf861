-- Landing tables (schema public) and bookkeeping (schema etl) of DESIGN §5.
-- Checks mirror the stream validator so that a row that slipped past it is refused by the
-- database (and dead-lettered as db_rejected) rather than stored.

CREATE SCHEMA IF NOT EXISTS etl;
CREATE SCHEMA IF NOT EXISTS analytics;

-- Stream landing: one row per distinct valid transaction, written by `etl kafka-to-postgres`.
CREATE TABLE public.transactions_sink (
    tx_id              uuid           PRIMARY KEY,
    user_id            uuid           NOT NULL,
    amount             numeric(14, 2) NOT NULL CHECK (amount <> 0 AND abs(amount) <= 1000000),
    currency           text           NOT NULL CHECK (currency IN ('USD', 'EUR', 'GBP', 'CAD', 'AUD')),
    merchant           text           NOT NULL CHECK (length(merchant) BETWEEN 1 AND 255),
    category           text           NOT NULL,
    event_time         timestamptz    NOT NULL,
    status             text           NOT NULL CHECK (status IN ('approved', 'declined', 'pending')),
    payment_method     text           NOT NULL,
    city               text,
    country            text,
    source_system      text,
    transaction_type   text,
    processing_time_ms integer,
    kafka_topic        text           NOT NULL,
    kafka_partition    integer        NOT NULL,
    kafka_offset       bigint         NOT NULL,
    produced_at        timestamptz,
    ingested_at        timestamptz    NOT NULL DEFAULT now(),
    user_txn_count     bigint         NOT NULL,
    user_running_mean  double precision NOT NULL,
    z_score            double precision,
    is_anomaly         boolean        NOT NULL DEFAULT false
);
CREATE INDEX transactions_sink_event_time_idx ON public.transactions_sink (event_time);
CREATE INDEX transactions_sink_user_time_idx ON public.transactions_sink (user_id, event_time);
CREATE INDEX transactions_sink_merchant_time_idx ON public.transactions_sink (merchant, event_time);
-- Incremental models read what arrived since their last run.
CREATE INDEX transactions_sink_ingested_at_idx ON public.transactions_sink (ingested_at);
CREATE INDEX transactions_sink_anomaly_idx ON public.transactions_sink (event_time) WHERE is_anomaly;

-- Stream messages that failed validation (also sent to the dead-letter topic).
CREATE TABLE public.transactions_rejected (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    error_kind      text        NOT NULL,
    error_message   text        NOT NULL,
    payload         bytea,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    -- A replayed offset is the same rejection, not a new one.
    UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX transactions_rejected_kind_idx ON public.transactions_rejected (error_kind, rejected_at);

-- Batch landing: the monthly CSV files, typed, one row per good CSV line.
CREATE TABLE public.users_raw (
    user_id              uuid        NOT NULL,
    first_name           text        NOT NULL,
    last_name            text        NOT NULL,
    email                text        NOT NULL,
    age                  smallint    NOT NULL CHECK (age BETWEEN 18 AND 120),
    income_bracket       text        NOT NULL CHECK (income_bracket IN ('low', 'medium', 'high', 'very_high')),
    customer_tier        text        NOT NULL CHECK (customer_tier IN ('bronze', 'silver', 'gold', 'platinum')),
    risk_profile         text        NOT NULL CHECK (risk_profile IN ('aggressive', 'moderate', 'conservative')),
    city                 text        NOT NULL,
    state                text        NOT NULL,
    country              text        NOT NULL,
    registration_date    timestamp   NOT NULL,
    preferred_categories text[]      NOT NULL,
    is_active            boolean     NOT NULL,
    source_system        text        NOT NULL,
    source_file          text        NOT NULL,
    source_line          bigint      NOT NULL,
    loaded_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_file, source_line)
);
CREATE INDEX users_raw_user_id_idx ON public.users_raw (user_id, registration_date);

CREATE TABLE public.transactions_batch_raw (
    tx_id       uuid           NOT NULL,
    user_id     uuid           NOT NULL,
    amount      numeric(14, 2) NOT NULL,
    currency    text           NOT NULL,
    merchant    text           NOT NULL,
    category    text           NOT NULL,
    "timestamp" timestamptz    NOT NULL,
    source_file text           NOT NULL,
    source_line bigint         NOT NULL,
    loaded_at   timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (source_file, source_line)
);
CREATE INDEX transactions_batch_raw_tx_id_idx ON public.transactions_batch_raw (tx_id);
CREATE INDEX transactions_batch_raw_user_time_idx ON public.transactions_batch_raw (user_id, "timestamp");
CREATE INDEX transactions_batch_raw_time_idx ON public.transactions_batch_raw ("timestamp");
CREATE INDEX transactions_batch_raw_merchant_idx ON public.transactions_batch_raw (merchant, "timestamp");

-- Sink position: the next offset to read per partition, written in the same transaction as the rows.
CREATE TABLE etl.sink_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL CHECK (partition >= 0),
    next_offset    bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Welford running statistics per user over the stream, in offset order.
CREATE TABLE etl.user_stats (
    user_id    uuid             PRIMARY KEY,
    txn_count  bigint           NOT NULL CHECK (txn_count > 0),
    mean       double precision NOT NULL,
    m2         double precision NOT NULL CHECK (m2 >= 0),
    updated_at timestamptz      NOT NULL DEFAULT now()
);

-- Anomalies waiting to be published to the `anomalies` topic (transactional outbox).
CREATE TABLE etl.anomaly_outbox (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id        uuid        NOT NULL UNIQUE,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX anomaly_outbox_unpublished_idx ON etl.anomaly_outbox (id) WHERE published_at IS NULL;

-- One row per landed CSV file; the content hash makes loading idempotent.
CREATE TABLE etl.loaded_files (
    file_name     text        PRIMARY KEY,
    file_kind     text        NOT NULL CHECK (file_kind IN ('users', 'transactions')),
    content_hash  text        NOT NULL,
    file_month    date,
    size_bytes    bigint      NOT NULL,
    rows_loaded   bigint      NOT NULL,
    rows_rejected bigint      NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX loaded_files_hash_idx ON etl.loaded_files (content_hash);

-- CSV rows that failed validation: nothing in a file is dropped without a trace.
CREATE TABLE etl.batch_rejects (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_file text        NOT NULL,
    source_line bigint      NOT NULL,
    column_name text,
    reason      text        NOT NULL,
    raw_line    text        NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batch_rejects_file_idx ON etl.batch_rejects (source_file, source_line);

-- History of model builds and data tests (appended, never overwritten).
CREATE TABLE etl.model_runs (
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
CREATE INDEX model_runs_run_idx ON etl.model_runs (run_id);
CREATE INDEX model_runs_model_idx ON etl.model_runs (model, started_at DESC);

CREATE TABLE etl.test_results (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      uuid        NOT NULL,
    test_name   text        NOT NULL,
    model       text,
    column_name text,
    severity    text        NOT NULL CHECK (severity IN ('warn', 'error')),
    status      text        NOT NULL CHECK (status IN ('pass', 'warn', 'fail', 'error', 'skipped')),
    failures    bigint,
    message     text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL
);
CREATE INDEX test_results_run_idx ON etl.test_results (run_id);
CREATE INDEX test_results_test_idx ON etl.test_results (test_name, started_at DESC);
