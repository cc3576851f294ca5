-- When a project entered its status: how long one has been stuck provisioning, say, whatever
-- else touched its row meanwhile (a new job, a restart by `reconcile`, a new generation).
ALTER TABLE projects ADD COLUMN status_changed_at timestamptz;
UPDATE projects SET status_changed_at = updated_at;
ALTER TABLE projects
    ALTER COLUMN status_changed_at SET NOT NULL,
    ALTER COLUMN status_changed_at SET DEFAULT now();

CREATE FUNCTION projects_set_status_changed_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        NEW.status_changed_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER projects_status_changed_at BEFORE UPDATE OF status ON projects
    FOR EACH ROW EXECUTE FUNCTION projects_set_status_changed_at();
