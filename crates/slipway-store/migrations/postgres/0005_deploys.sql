-- Server deploys: the pipeline job behind a release (JSON {project, pipeline, job}), and the
-- artifacts each job uploaded (content-addressed blobs in the data directory), kept until
-- their `expire_in`.
ALTER TABLE releases ADD COLUMN pipeline TEXT;

CREATE TABLE job_artifacts (
    run_id     BIGINT NOT NULL,
    job_index  BIGINT  NOT NULL,
    digest     TEXT    NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (run_id, job_index)
);
CREATE INDEX job_artifacts_digest ON job_artifacts (digest);
