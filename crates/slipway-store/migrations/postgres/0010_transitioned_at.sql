-- When a run's scheduler last moved: the reconciler looks only at runs with a job that ended
-- after it (a transition lost to an outage), not at every running run.
ALTER TABLE runs ADD COLUMN transitioned_at BIGINT;
