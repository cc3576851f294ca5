DROP TRIGGER projects_status_changed_at ON projects;
DROP FUNCTION projects_set_status_changed_at();
ALTER TABLE projects DROP COLUMN status_changed_at;
