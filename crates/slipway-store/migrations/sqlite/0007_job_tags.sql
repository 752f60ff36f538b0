-- A job's `tags:` as `,a,b,` (sorted, unique; `,` for none): an agent takes a job only when it
-- has every one of them, as GitLab's runners do.
ALTER TABLE jobs ADD COLUMN tags TEXT NOT NULL DEFAULT ',';
