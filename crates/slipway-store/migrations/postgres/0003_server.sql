-- The server: projects it watches, API tokens (their SHA-256 only), and what a pipeline was
-- asked with (its variables) and why it ended early (a pipeline file that did not plan).
CREATE TABLE projects (
    name       TEXT    PRIMARY KEY,
    repo       TEXT    NOT NULL, -- a URL git can fetch, or a path on the server's machine
    branch     TEXT    NOT NULL, -- the default branch
    poll_ms    BIGINT,              -- fetch the remote this often; NULL: webhooks only
    last_seen  TEXT,             -- JSON {ref: sha} of what polling saw last
    created_at BIGINT  NOT NULL
);

CREATE TABLE tokens (
    hash       TEXT    PRIMARY KEY, -- hex SHA-256 of the token
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL,    -- admin | agent | job
    run_id     BIGINT,               -- job tokens: the run they belong to
    expires_at BIGINT,
    created_at BIGINT  NOT NULL
);

ALTER TABLE runs ADD COLUMN variables TEXT; -- JSON [[name, value]] given at trigger time
ALTER TABLE runs ADD COLUMN detail TEXT;    -- why the run ended without running (plan errors)
