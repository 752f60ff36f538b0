-- Notifications (docs/monitoring.md): each one a delivery to one channel of one receiver,
-- queued here first and retried with back-off until it is delivered (or gives up after a
-- day), so none is lost to a receiver that is down or a server that restarts. The payload is
-- the notification (its alerts), never a channel's URL or credentials.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver        TEXT    NOT NULL,  -- a receiver's name, or 'alertmanager'
    channel         TEXT    NOT NULL,  -- webhook[0], slack[0], email[0], alertmanager[0]
    group_key       TEXT    NOT NULL,
    project         TEXT,              -- the alerts' project, when they have one
    status          TEXT    NOT NULL,  -- queued | delivered | failed
    payload         TEXT    NOT NULL,  -- JSON
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
-- The dispatcher's groups and what each last told (once-per-state across restarts).
CREATE TABLE notify_state (
    name       TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE silences (
    id         TEXT    PRIMARY KEY,
    matchers   TEXT    NOT NULL,  -- JSON ["name=\"value\"", ...]
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    comment    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
