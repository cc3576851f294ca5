-- What each department's projects reserve at each site, kept by the database in step with
-- the projects: the quota check under the (field, site) lock reads one row here instead of
-- summing the department's projects, so the time the lock is held no longer grows with them.
-- The same rule as ProjectStatus::holds_quota: every project but the deleted and rejected.
CREATE TABLE project_reservations (
    department_id uuid NOT NULL REFERENCES departments (id) ON DELETE CASCADE,
    site_id       uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    cpu           int8 NOT NULL,
    ram_gb        int8 NOT NULL,
    PRIMARY KEY (department_id, site_id)
);

-- Applies one project change. The triggers below are deferred to the commit: a transaction
-- counts nothing here until it commits, so the check of a reservation sees exactly what
-- committed transactions reserved, the row of a (department, site) is locked only for the
-- commit, and never before the (field, site) advisory lock a transaction takes.
CREATE FUNCTION project_reservations_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status NOT IN ('deleted', 'rejected') THEN
        UPDATE project_reservations SET cpu = cpu - OLD.cpu, ram_gb = ram_gb - OLD.ram_gb
         WHERE department_id = OLD.department_id AND site_id = OLD.site_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status NOT IN ('deleted', 'rejected') THEN
        INSERT INTO project_reservations AS r (department_id, site_id, cpu, ram_gb)
        VALUES (NEW.department_id, NEW.site_id, NEW.cpu, NEW.ram_gb)
        ON CONFLICT (department_id, site_id) DO UPDATE
           SET cpu = r.cpu + excluded.cpu, ram_gb = r.ram_gb + excluded.ram_gb;
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER project_reservations_insert AFTER INSERT ON projects
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.status NOT IN ('deleted', 'rejected'))
    EXECUTE FUNCTION project_reservations_apply();

-- Only a change of what the project reserves: its status in or out of deleted/rejected, its
-- size, its department or site. The many updates that change nothing of it queue nothing.
CREATE CONSTRAINT TRIGGER project_reservations_update AFTER UPDATE ON projects
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (
        (OLD.status IN ('deleted', 'rejected')) IS DISTINCT FROM (NEW.status IN ('deleted', 'rejected'))
        OR ((OLD.cpu, OLD.ram_gb, OLD.department_id, OLD.site_id)
            IS DISTINCT FROM (NEW.cpu, NEW.ram_gb, NEW.department_id, NEW.site_id)
            AND NEW.status NOT IN ('deleted', 'rejected')))
    EXECUTE FUNCTION project_reservations_apply();

CREATE CONSTRAINT TRIGGER project_reservations_delete AFTER DELETE ON projects
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.status NOT IN ('deleted', 'rejected'))
    EXECUTE FUNCTION project_reservations_apply();

-- The triggers exist (and hold the projects against concurrent writes) before the sums are
-- taken: nothing written meanwhile is missed or counted twice.
INSERT INTO project_reservations (department_id, site_id, cpu, ram_gb)
SELECT department_id, site_id, sum(cpu), sum(ram_gb)
  FROM projects WHERE status NOT IN ('deleted', 'rejected')
 GROUP BY department_id, site_id;
