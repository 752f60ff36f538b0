-- A job token names its job: it is valid only while that job runs (not until a clock says so).
ALTER TABLE tokens ADD COLUMN job_index BIGINT;
