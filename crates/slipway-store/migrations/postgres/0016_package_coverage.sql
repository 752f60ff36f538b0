-- Coverage per Go package, as `go test -cover` prints it in a job's log
-- ("ok  <package>  0.01s  coverage: 81.3% of statements"), in hundredths of a percent.
CREATE TABLE package_coverage (
    run_id     BIGINT NOT NULL,
    job_index  BIGINT NOT NULL,
    project    TEXT    NOT NULL,
    package    TEXT    NOT NULL,
    ref_name   TEXT,
    hundredths BIGINT NOT NULL,
    PRIMARY KEY (run_id, job_index, package)
);
CREATE INDEX package_coverage_trend ON package_coverage (project, package, run_id);
