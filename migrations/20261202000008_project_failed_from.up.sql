-- The status a failed project failed in: a retry of a failed deletion deletes again, it does
-- not bring back a project its owner deleted.
ALTER TABLE projects ADD COLUMN failed_from text
    CHECK (failed_from IN ('provisioning', 'degraded', 'deleting'));
UPDATE projects p SET failed_from = 'deleting'
  FROM jobs j
 WHERE p.status = 'failed' AND j.id = p.last_job_id
   AND (j.kind = 'deprovision_namespace' OR (j.kind = 'poll_argocd' AND j.payload->>'expect' = 'absent'));
UPDATE projects SET failed_from = 'provisioning' WHERE status = 'failed' AND failed_from IS NULL;
