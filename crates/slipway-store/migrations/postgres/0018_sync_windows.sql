-- GitOps sync windows (docs/gitops.md#sync-windows): when an application may sync by itself,
-- as JSON — a list of {kind: allow|deny, schedule: cron, duration_ms, manual, time_zone}.
ALTER TABLE apps ADD COLUMN windows TEXT NOT NULL DEFAULT '[]';
