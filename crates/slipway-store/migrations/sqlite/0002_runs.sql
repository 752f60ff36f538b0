-- Pipeline runs and their jobs (the server persists its scheduler's transitions here), and
-- what each job's runner holds (a lease, renewed while it runs).
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT    NOT NULL,
    ref_name    TEXT,
    commit_sha  TEXT,
    source      TEXT    NOT NULL, -- push | web | schedule | merge_request_event | api | ...
    status      TEXT    NOT NULL, -- running | success | failed | canceled
    snapshot    TEXT,             -- JSON: the scheduler after its last transition
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX runs_by_project ON runs (project, id);

CREATE TABLE jobs (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    idx         INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    stage       TEXT    NOT NULL,
    status      TEXT    NOT NULL, -- GitLab's job statuses, plus allowed_failure
    exit_code   INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    reason      TEXT,
    runner      TEXT,             -- who holds the job while it runs
    lease_until INTEGER,
    queued_at   INTEGER,
    started_at  INTEGER,
    finished_at INTEGER,
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX jobs_pending ON jobs (status, queued_at);
