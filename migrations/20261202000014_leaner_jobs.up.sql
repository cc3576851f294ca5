-- Leaner job rows for the queue's hot path. Claiming and finishing a job each write a new row
-- version (status is in index predicates, so no update is HOT): every CHECK is evaluated again
-- and every full index gets an entry each time.
-- * The kind's pattern check ran a regular expression on every claim and completion; kinds
--   are compile-time names of the job registry (a unit test pins them), so it goes.
-- * Only jobs about something have a subject: the subject index skips the others.
-- * Pruning finds old finished jobs by their time-ordered id (UUIDv7) instead of an index on
--   finished_at that every completion had to update.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
DROP INDEX jobs_subject_idx;
CREATE INDEX jobs_subject_idx ON jobs (subject_type, subject_id, id) WHERE subject_id IS NOT NULL;
DROP INDEX jobs_finished_idx;
