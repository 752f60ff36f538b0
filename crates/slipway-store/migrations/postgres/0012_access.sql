-- Access control: users (argon2id password hashes), role bindings made through the API (the
-- access file holds the rest), tokens owned by users with scopes, a last use and a revocation,
-- agent tokens bound to one agent name, and the hash-chained audit log.
CREATE TABLE users (
    name       TEXT    PRIMARY KEY,
    password   TEXT,                -- argon2id PHC string; NULL: signs in with tokens only
    created_at BIGINT  NOT NULL,
    created_by TEXT    NOT NULL
);

CREATE TABLE bindings (
    user_name  TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    role       TEXT    NOT NULL,
    project    TEXT    NOT NULL,    -- '' for every project
    created_at BIGINT  NOT NULL,
    created_by TEXT    NOT NULL,
    PRIMARY KEY (user_name, role, project)
);

ALTER TABLE tokens ADD COLUMN user_name TEXT;    -- API tokens: their owner
ALTER TABLE tokens ADD COLUMN scopes TEXT;       -- JSON ["verb:resource", …]; NULL: all the owner's
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
ALTER TABLE tokens ADD COLUMN revoked_at BIGINT;
ALTER TABLE tokens ADD COLUMN agent TEXT;        -- agent tokens: the one agent name they may use

-- The token made at the first start belonged to no one: it is the admin user's now.
INSERT INTO users (name, password, created_at, created_by)
    SELECT 'admin', NULL, MIN(created_at), 'slipway' FROM tokens WHERE role = 'admin' HAVING COUNT(*) > 0;
INSERT INTO bindings (user_name, role, project, created_at, created_by)
    SELECT 'admin', 'admin', '', created_at, 'slipway' FROM users WHERE name = 'admin';
UPDATE tokens SET role = 'user', user_name = 'admin' WHERE role = 'admin';

CREATE TABLE audit (
    seq        BIGINT  PRIMARY KEY,  -- 1, 2, 3, … with no gaps
    at         BIGINT  NOT NULL,
    actor      TEXT    NOT NULL,
    address    TEXT    NOT NULL,
    action     TEXT    NOT NULL,    -- e.g. "POST /api/v1/projects/{name}/pipelines"
    target     TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,    -- allowed | denied | failed
    status     BIGINT  NOT NULL,     -- the HTTP status answered
    detail     TEXT    NOT NULL,    -- JSON, secrets redacted
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL     -- SHA-256 over prev_hash and this entry
);
CREATE INDEX audit_at ON audit (at);
