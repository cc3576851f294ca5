-- The reservation check of a new project at its commit, for the transactions that ask for it
-- (app::projects::create without an Idempotency-Key, through the transaction-local setting
-- `infrahub.reservation_check` = 'at_commit'): the (field, site) lock is then taken here, in
-- the deferred trigger that counts the project, and held only through the commit, instead
-- of from a statement before the commit to its end. Every other transaction checks as
-- before (store::capacity::lock_quota_and_usage, then the write) and this function only
-- counts, as migration 22's did.
--
-- The setting is set through `project_reservation_check` below, not `set_config` itself, so
-- that a daemon of this version on a schema without this migration (reverted under it)
-- fails to create projects instead of creating them unchecked.
--
-- Refusals are errors the application knows: IHQ01, over the department's quota at the
-- site; IHQ90, the reservation fits but takes the department's use past 90 % of its quota
-- (the application then runs the request again with the check before the commit, which
-- refuses with the numbers or writes the warning in the same transaction).
CREATE OR REPLACE FUNCTION project_reservations_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    checked boolean := TG_OP <> 'DELETE' AND NEW.status NOT IN ('deleted', 'rejected')
        AND current_setting('infrahub.reservation_check', true) = 'at_commit';
    field uuid;
    -- What the project held before this change at its (new) department and site.
    held_cpu int8 := 0;
    held_ram int8 := 0;
    used_cpu int8;
    used_ram int8;
    quota_cpu int8;
    quota_ram int8;
BEGIN
    IF checked THEN
        -- The lock every capacity-changing write of the field at the site takes, before the
        -- row of the counter: the order of the transactions that check before the commit.
        SELECT d.field_id INTO field FROM departments d WHERE d.id = NEW.department_id;
        IF field IS NULL THEN
            -- pg_advisory_xact_lock(NULL) would lock nothing.
            RAISE EXCEPTION 'project % has no department with a field', NEW.id;
        END IF;
        PERFORM pg_advisory_xact_lock(capacity_lock_key(field, NEW.site_id));
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status NOT IN ('deleted', 'rejected') THEN
        UPDATE project_reservations SET cpu = cpu - OLD.cpu, ram_gb = ram_gb - OLD.ram_gb
         WHERE department_id = OLD.department_id AND site_id = OLD.site_id;
        IF TG_OP = 'UPDATE' AND (OLD.department_id, OLD.site_id) = (NEW.department_id, NEW.site_id) THEN
            held_cpu := OLD.cpu;
            held_ram := OLD.ram_gb;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status NOT IN ('deleted', 'rejected') THEN
        -- A statement of its own after the lock: under READ COMMITTED it sees what the
        -- lock's previous holders committed.
        INSERT INTO project_reservations AS r (department_id, site_id, cpu, ram_gb)
        VALUES (NEW.department_id, NEW.site_id, NEW.cpu, NEW.ram_gb)
        ON CONFLICT (department_id, site_id) DO UPDATE
           SET cpu = r.cpu + excluded.cpu, ram_gb = r.ram_gb + excluded.ram_gb
        RETURNING r.cpu, r.ram_gb INTO used_cpu, used_ram;
        IF checked AND (NEW.cpu > held_cpu OR NEW.ram_gb > held_ram) THEN
            SELECT coalesce(q.cpu_limit, 0), coalesce(q.ram_gb_limit, 0)
              INTO quota_cpu, quota_ram
              FROM (SELECT) one
              LEFT JOIN department_quotas q
                ON q.department_id = NEW.department_id AND q.site_id = NEW.site_id;
            IF used_cpu > quota_cpu OR used_ram > quota_ram THEN
                RAISE EXCEPTION 'the department''s quota at the site does not hold project %', NEW.id
                    USING ERRCODE = 'IHQ01';
            END IF;
            -- domain::capacity::crosses_90_percent, before and after this change.
            IF (quota_cpu > 0 AND (used_cpu - NEW.cpu + held_cpu) * 10 <= quota_cpu * 9
                              AND used_cpu * 10 > quota_cpu * 9)
               OR (quota_ram > 0 AND (used_ram - NEW.ram_gb + held_ram) * 10 <= quota_ram * 9
                                 AND used_ram * 10 > quota_ram * 9) THEN
                RAISE EXCEPTION 'project % takes its department past 90 %% of its quota at the site', NEW.id
                    USING ERRCODE = 'IHQ90';
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- Sets, for the rest of the transaction, whether the projects it writes are checked here at
-- its commit (store::projects::insert).
CREATE FUNCTION project_reservation_check(at_commit boolean) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT set_config('infrahub.reservation_check', CASE WHEN at_commit THEN 'at_commit' ELSE '' END, true)
$$;
