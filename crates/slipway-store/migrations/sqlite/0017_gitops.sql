-- GitOps (docs/gitops.md): applications — a folder of a config repository → one environment
-- of a project — what the reconciler last found for each, and every sync it made.
CREATE TABLE apps (
    name          TEXT    PRIMARY KEY,
    project       TEXT    NOT NULL,
    repo          TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    revision      TEXT    NOT NULL,
    environment   TEXT    NOT NULL UNIQUE,  -- one application per environment
    automated     INTEGER NOT NULL,          -- 1: syncs by itself when the desired state moves
    self_heal     INTEGER NOT NULL,          -- 1: repairs drift on the targets
    prune         INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    status        TEXT    NOT NULL,          -- JSON: sync and health status, the reason, the diff
    pinned        INTEGER,                   -- a release a rollback pinned the environment to
    pinned_commit TEXT,                      -- the desired state's commit when it was pinned
    failed_commit TEXT,                      -- a commit whose sync failed: not tried again
    checked_at    INTEGER
);
CREATE TABLE app_syncs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    app         TEXT    NOT NULL,
    commit_sha  TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    release_id  INTEGER,
    trigger     TEXT    NOT NULL,  -- auto | manual | self-heal
    outcome     TEXT    NOT NULL,  -- synced | failed | unchanged
    detail      TEXT,
    actor       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL
);
CREATE INDEX app_syncs_app ON app_syncs (app, id);
