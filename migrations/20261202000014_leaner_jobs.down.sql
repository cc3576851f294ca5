CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
DROP INDEX jobs_subject_idx;
CREATE INDEX jobs_subject_idx ON jobs (subject_type, subject_id, id);
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$');
