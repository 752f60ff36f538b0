-- Webhooks: each project's secret (forges sign with it, so it is kept, not hashed) and the
-- deliveries taken, so a replayed delivery starts nothing twice.
ALTER TABLE projects ADD COLUMN webhook_secret TEXT;

CREATE TABLE webhook_deliveries (
    id          TEXT    PRIMARY KEY,
    project     TEXT    NOT NULL,
    run_id      BIGINT,
    received_at BIGINT  NOT NULL
);
