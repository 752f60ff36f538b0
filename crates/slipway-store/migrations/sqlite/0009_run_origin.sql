-- Who a pipeline is for and who started it: the commit's author (`Name <email>`) and what
-- triggered it (`api: admin`, `webhook: github`, `polling`, `schedule 3`).
ALTER TABLE runs ADD COLUMN author TEXT;
ALTER TABLE runs ADD COLUMN triggered_by TEXT;
