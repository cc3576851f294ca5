-- The fields an audit event belongs to, so a field admin can read its field's history. A
-- trigger fills them at insert time, while the subject still says where it lives; the history
-- keeps them after the subject moves or goes. A change that crosses fields (a server moved
-- from one field to another, an account moved between departments of two fields) belongs to
-- both.
ALTER TABLE audit_events ADD COLUMN field_ids uuid[] NOT NULL DEFAULT '{}';

CREATE FUNCTION audit_event_fields(p_kind text, p_subject text, p_before jsonb, p_after jsonb)
RETURNS uuid[] LANGUAGE plpgsql STABLE AS $$
DECLARE
    found uuid[];
BEGIN
    SELECT coalesce(array_agg(DISTINCT f) FILTER (WHERE f IS NOT NULL), '{}') INTO found
      FROM (VALUES
        -- What the change itself says, before and after.
        ((p_after ->> 'field_id')::uuid),
        ((p_before ->> 'field_id')::uuid),
        ((SELECT d.field_id FROM departments d WHERE d.id = (p_after ->> 'department_id')::uuid)),
        ((SELECT d.field_id FROM departments d WHERE d.id = (p_before ->> 'department_id')::uuid)),
        -- Where the subject lives now.
        (CASE WHEN p_kind = 'field' THEN p_subject::uuid END),
        (CASE WHEN p_kind = 'department' THEN
            (SELECT d.field_id FROM departments d WHERE d.id = p_subject::uuid) END),
        (CASE WHEN p_kind = 'department_quota' THEN
            (SELECT d.field_id FROM departments d
              WHERE d.id = split_part(p_subject, ':', 1)::uuid) END),
        (CASE WHEN p_kind = 'project' THEN
            (SELECT d.field_id FROM projects p JOIN departments d ON d.id = p.department_id
              WHERE p.id = p_subject::uuid) END),
        (CASE WHEN p_kind = 'server' AND p_before IS NULL AND p_after IS NULL THEN
            (SELECT s.field_id FROM servers s WHERE s.id = p_subject::uuid) END),
        (CASE WHEN p_kind = 'user' AND p_before IS NULL AND p_after IS NULL THEN
            (SELECT coalesce(u.field_id, d.field_id) FROM users u
               LEFT JOIN departments d ON d.id = u.department_id
              WHERE u.id = p_subject::uuid) END),
        (CASE WHEN p_kind = 'job' THEN
            (SELECT coalesce(j.scope_field_id, d.field_id) FROM jobs j
               LEFT JOIN departments d ON d.id = j.scope_department_id
              WHERE j.id = p_subject::uuid) END),
        (CASE WHEN p_kind = 'login' THEN
            (SELECT coalesce(u.field_id, d.field_id) FROM users u
               LEFT JOIN departments d ON d.id = u.department_id
              WHERE lower(u.username) = lower(p_subject)) END)
      ) AS candidates (f);
    RETURN found;
EXCEPTION WHEN invalid_text_representation THEN
    -- A subject id or a JSON value that is not a uuid: the event belongs to no field.
    RETURN '{}';
END;
$$;

CREATE FUNCTION audit_events_set_fields() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.field_ids = '{}' THEN
        NEW.field_ids := audit_event_fields(NEW.subject_type, NEW.subject_id, NEW.before, NEW.after);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_events_fields BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_set_fields();

-- Backfill what can still be placed.
UPDATE audit_events SET field_ids = audit_event_fields(subject_type, subject_id, before, after);

CREATE INDEX audit_events_fields_idx ON audit_events USING gin (field_ids);
CREATE INDEX audit_events_actor_idx ON audit_events (actor, id);
CREATE INDEX audit_events_action_idx ON audit_events (action, id);
