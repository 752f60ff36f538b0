-- Test reports (docs/dashboard.md): the JUnit cases of each attempt of a job, read from the
-- artifacts its agent uploaded (its `artifacts:reports:junit` files), and the coverage a
-- job's `coverage:` regex found in its log. Times in milliseconds, coverage in hundredths
-- of a percent: integers, as everywhere in this store.
CREATE TABLE test_cases (
    run_id     INTEGER NOT NULL,
    job_index  INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    project    TEXT    NOT NULL,
    job_name   TEXT    NOT NULL,
    suite      TEXT    NOT NULL,
    classname  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    status     TEXT    NOT NULL,  -- passed | failed | error | skipped
    time_ms    INTEGER NOT NULL,
    message    TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX test_cases_run ON test_cases (run_id, job_index, attempt);
CREATE INDEX test_cases_history ON test_cases (project, classname, name, run_id);
CREATE TABLE job_coverage (
    run_id     INTEGER NOT NULL,
    job_index  INTEGER NOT NULL,
    project    TEXT    NOT NULL,
    job_name   TEXT    NOT NULL,
    ref_name   TEXT,
    hundredths INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, job_index)
);
CREATE INDEX job_coverage_trend ON job_coverage (project, job_name, run_id);
