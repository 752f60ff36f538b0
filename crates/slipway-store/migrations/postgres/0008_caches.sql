-- Job caches shared by a server's agents: per project and key, the blob of their files.
CREATE TABLE caches (
    project    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    size       BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project, key)
);
