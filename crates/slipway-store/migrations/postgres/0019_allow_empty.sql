-- GitOps: Argo CD's syncPolicy.automated.allowEmpty (docs/gitops.md#prune) — whether an
-- automated sync with prune may retire the environment when its desired file is deleted.
ALTER TABLE apps ADD COLUMN allow_empty BIGINT NOT NULL DEFAULT 0;
