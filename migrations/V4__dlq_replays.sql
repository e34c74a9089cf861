-- `etl dlq replay`'s ledger: every transaction it re-produced, claimed in the same database
-- transaction that waits for the broker's acknowledgement. A tx_id is re-produced into a topic at
-- most once, whichever dead letter (a copy, or the same message dead-lettered again) carries it.
CREATE TABLE etl.dlq_replays (
    target_topic  text        NOT NULL,
    tx_id         uuid        NOT NULL,
    dlq_topic     text        NOT NULL,
    dlq_partition integer     NOT NULL CHECK (dlq_partition >= 0),
    dlq_offset    bigint      NOT NULL CHECK (dlq_offset >= 0),
    error_kind    text        NOT NULL,
    replayed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_topic, tx_id)
);
