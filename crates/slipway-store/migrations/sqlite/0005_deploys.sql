-- Server deploys: the pipeline job behind a release (JSON {project, pipeline, job}), and the
-- artifacts each job uploaded (content-addressed blobs in the data directory), kept until
-- their `expire_in`.
ALTER TABLE releases ADD COLUMN pipeline TEXT;

CREATE TABLE job_artifacts (
    run_id     INTEGER NOT NULL,
    job_index  INTEGER NOT NULL,
    digest     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (run_id, job_index)
);
CREATE INDEX job_artifacts_digest ON job_artifacts (digest);
