DROP FUNCTION project_reservation_check(boolean);

-- Migration 22's function: it counts, and checks nothing.
CREATE OR REPLACE FUNCTION project_reservations_apply() RETURNS trigger LANGUAGE plpgsql AS $$
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
