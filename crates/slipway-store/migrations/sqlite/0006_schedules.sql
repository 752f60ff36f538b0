-- Pipeline schedules, as GitLab's: a cron expression in a time zone, a ref and variables. The
-- next run is kept, so a schedule missed while the server was down runs once when it starts.
CREATE TABLE schedules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT    NOT NULL,
    description TEXT    NOT NULL,
    cron        TEXT    NOT NULL,
    timezone    TEXT    NOT NULL,
    ref_name    TEXT    NOT NULL,
    variables   TEXT    NOT NULL, -- JSON [[name, value], ...]
    active      INTEGER NOT NULL,
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,
    last_run_id INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (active, next_run_at);
