-- Secrets of a project (or of one of its environments), encrypted with XChaCha20-Poly1305
-- under the server's key file; the store never holds a value in clear.
CREATE TABLE secrets (
    project     TEXT    NOT NULL,
    environment TEXT    NOT NULL,    -- '' for every environment
    name        TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,    -- which key sealed it (rotation re-seals)
    nonce       TEXT    NOT NULL,    -- hex, 24 bytes
    ciphertext  TEXT    NOT NULL,    -- hex, with its 16-byte tag
    protected   INTEGER  NOT NULL,     -- 1: only pipelines of protected refs get it
    file        INTEGER  NOT NULL,     -- 1: the job gets a file's path, GitLab's file variables
    set_by      TEXT    NOT NULL,
    set_at      INTEGER  NOT NULL,
    PRIMARY KEY (project, environment, name)
);
