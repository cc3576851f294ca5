-- Back to the trigger function of migration 9.
CREATE OR REPLACE FUNCTION audit_event_fields(p_kind text, p_subject text, p_before jsonb, p_after jsonb)
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

DROP FUNCTION audit_uuid(text);
