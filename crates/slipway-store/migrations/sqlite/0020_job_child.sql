-- A trigger job's child pipeline as it ended (its RunRecord's JSON), reported by the agent
-- that ran it: pipeline views show it nested under the job (docs/pipeline.md#child-pipelines).
ALTER TABLE jobs ADD COLUMN child TEXT;
