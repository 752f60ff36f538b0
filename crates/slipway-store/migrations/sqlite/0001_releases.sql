-- Releases, the current release per environment, deploy locks, the deploy journal and approvals.
CREATE TABLE releases (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    environment    TEXT    NOT NULL,
    version        TEXT    NOT NULL,
    artifacts      TEXT    NOT NULL, -- JSON list of {name, platform, sha256, size, path}
    config_hash    TEXT    NOT NULL,
    config         TEXT    NOT NULL, -- JSON of the environment as deployed
    commit_sha     TEXT,
    branch         TEXT,
    actor          TEXT    NOT NULL,
    reason         TEXT    NOT NULL, -- deploy | promote | rollback | auto-rollback
    source_release INTEGER,
    status         TEXT    NOT NULL, -- queued | deploying | healthy | failed | rolled_back | superseded | replaced
    status_detail  TEXT,
    created_at     INTEGER NOT NULL, -- unix milliseconds
    started_at     INTEGER,
    finished_at    INTEGER
);
CREATE INDEX releases_by_environment ON releases (environment, id);

CREATE TABLE environments (
    name            TEXT PRIMARY KEY,
    current_release INTEGER REFERENCES releases (id),
    updated_at      INTEGER NOT NULL
);

CREATE TABLE locks (
    environment TEXT PRIMARY KEY,
    owner       TEXT    NOT NULL,
    release_id  INTEGER,
    lease_until INTEGER NOT NULL
);

CREATE TABLE steps (
    release_id INTEGER NOT NULL REFERENCES releases (id),
    seq        INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    detail     TEXT    NOT NULL, -- JSON
    at         INTEGER NOT NULL,
    PRIMARY KEY (release_id, seq)
);

CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT    NOT NULL,
    release_id  INTEGER NOT NULL REFERENCES releases (id),
    approver    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (release_id, approver)
);
