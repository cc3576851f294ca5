-- The field an audit event belongs to, so a field admin can read its field's history.
-- A trigger fills it at insert time, while the subject still says where it lives; the history
-- keeps it after the subject moves or goes.
ALTER TABLE audit_events ADD COLUMN field_id uuid;

CREATE FUNCTION audit_event_field(p_kind text, p_subject text, p_before jsonb, p_after jsonb)
RETURNS uuid LANGUAGE plpgsql STABLE AS $$
DECLARE
    from_json text := coalesce(p_after ->> 'field_id', p_before ->> 'field_id');
    dept uuid;
BEGIN
    IF from_json IS NOT NULL THEN
        RETURN from_json::uuid;
    END IF;
    CASE p_kind
        WHEN 'field' THEN
            RETURN p_subject::uuid;
        WHEN 'department' THEN
            RETURN (SELECT d.field_id FROM departments d WHERE d.id = p_subject::uuid);
        WHEN 'department_quota' THEN
            RETURN (SELECT d.field_id FROM departments d
                    WHERE d.id = split_part(p_subject, ':', 1)::uuid);
        WHEN 'project' THEN
            RETURN (SELECT d.field_id FROM projects p JOIN departments d ON d.id = p.department_id
                    WHERE p.id = p_subject::uuid);
        WHEN 'server' THEN
            RETURN (SELECT s.field_id FROM servers s WHERE s.id = p_subject::uuid);
        WHEN 'user' THEN
            dept := coalesce(p_after ->> 'department_id', p_before ->> 'department_id')::uuid;
            RETURN coalesce(
                (SELECT d.field_id FROM departments d WHERE d.id = dept),
                (SELECT coalesce(u.field_id, d.field_id) FROM users u
                 LEFT JOIN departments d ON d.id = u.department_id WHERE u.id = p_subject::uuid));
        WHEN 'job' THEN
            RETURN (SELECT coalesce(j.scope_field_id, d.field_id) FROM jobs j
                    LEFT JOIN departments d ON d.id = j.scope_department_id
                    WHERE j.id = p_subject::uuid);
        WHEN 'login' THEN
            RETURN (SELECT coalesce(u.field_id, d.field_id) FROM users u
                    LEFT JOIN departments d ON d.id = u.department_id
                    WHERE lower(u.username) = lower(p_subject));
        ELSE
            RETURN NULL;
    END CASE;
EXCEPTION WHEN invalid_text_representation THEN
    -- A p_subject p_subject that is not a uuid belongs to no field.
    RETURN NULL;
END;
$$;

CREATE FUNCTION audit_events_set_field() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.field_id IS NULL THEN
        NEW.field_id := audit_event_field(NEW.subject_type, NEW.subject_id, NEW.before, NEW.after);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_events_field BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_set_field();

-- Backfill what can still be placed.
UPDATE audit_events SET field_id = audit_event_field(subject_type, subject_id, before, after);

CREATE INDEX audit_events_field_idx ON audit_events (field_id, id) WHERE field_id IS NOT NULL;
CREATE INDEX audit_events_actor_idx ON audit_events (actor, id);
CREATE INDEX audit_events_action_idx ON audit_events (action, id);
