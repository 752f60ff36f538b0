-- Test reports (docs/dashboard.md): the JUnit cases of each attempt of a job, read from the
-- artifacts its agent uploaded (its `artifacts:reports:junit` files), and the coverage a
-- job's `coverage:` regex found in its log. Times in milliseconds, coverage in hundredths
-- of a percent: integers, as everywhere in this store.
CREATE TABLE test_cases (
    run_id     BIGINT NOT NULL,
    job_index  BIGINT NOT NULL,
    attempt    BIGINT NOT NULL,
    project    TEXT    NOT NULL,
    job_name   TEXT    NOT NULL,
    suite      TEXT    NOT NULL,
    classname  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    status     TEXT    NOT NULL,  -- passed | failed | error | skipped
    time_ms    BIGINT NOT NULL,
    message    TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX test_cases_run ON test_cases (run_id, job_index, attempt);
CREATE INDEX test_cases_history ON test_cases (project, classname, name, run_id);
CREATE TABLE job_coverage (
    run_id     BIGINT NOT NULL,
    job_index  BIGINT NOT NULL,
    project    TEXT    NOT NULL,
    job_name   TEXT    NOT NULL,
    ref_name   TEXT,
    hundredths BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, job_index)
);
CREATE INDEX job_coverage_trend ON job_coverage (project, job_name, run_id);
