-- Job caches shared by a server's agents: per project and key, the blob of their files.
CREATE TABLE caches (
    project    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (project, key)
);
