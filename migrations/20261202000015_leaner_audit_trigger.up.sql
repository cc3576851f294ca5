-- The audit trigger placed each event in its fields with one query over a dozen subqueries,
-- all of them evaluated for every event, inside an EXCEPTION block that turned a subject id
-- that is not a uuid into "no field". Measured: 20,000 audit inserts took 1.6 s with it and
-- 0.23 s without any trigger. This version asks only what the event's kind needs, skips
-- lookups of keys the change does not carry, and reads text that is not a uuid as NULL
-- (audit_uuid) instead of catching the cast's error: 0.46 s. For well-formed events it finds
-- the same fields (checked against every event of a benchmark database). One difference: a
-- value that is not a uuid no longer hides the fields the event's other values name (the
-- EXCEPTION block gave such an event none at all).
CREATE FUNCTION audit_uuid(p text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    -- Only forms uuid_in accepts (32 hex digits, a hyphen allowed after each group of four,
    -- the whole in braces or not), so the cast never raises.
    SELECT CASE WHEN p ~ '^[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7}$'
                  OR p ~ '^\{[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7}\}$'
                THEN p::uuid END
$$;

CREATE OR REPLACE FUNCTION audit_event_fields(p_kind text, p_subject text, p_before jsonb, p_after jsonb)
RETURNS uuid[] LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_found uuid[] := '{}';
    v_subject uuid := audit_uuid(CASE WHEN p_kind = 'department_quota'
                                    THEN split_part(p_subject, ':', 1) ELSE p_subject END);
    v_field uuid;
BEGIN
    -- What the change itself says, before and after.
    v_found := v_found || audit_uuid(p_after ->> 'field_id') || audit_uuid(p_before ->> 'field_id');
    IF p_after ? 'department_id' THEN
        SELECT d.field_id INTO v_field FROM departments d WHERE d.id = audit_uuid(p_after ->> 'department_id');
        v_found := v_found || v_field;
    END IF;
    IF p_before ? 'department_id' THEN
        SELECT d.field_id INTO v_field FROM departments d WHERE d.id = audit_uuid(p_before ->> 'department_id');
        v_found := v_found || v_field;
    END IF;
    -- Where the subject lives now.
    v_field := NULL;
    IF v_subject IS NULL AND p_kind <> 'login' THEN
        NULL;
    ELSIF p_kind = 'field' THEN
        v_field := v_subject;
    ELSIF p_kind IN ('department', 'department_quota') THEN
        SELECT d.field_id INTO v_field FROM departments d WHERE d.id = v_subject;
    ELSIF p_kind = 'project' THEN
        SELECT d.field_id INTO v_field FROM projects p JOIN departments d ON d.id = p.department_id
         WHERE p.id = v_subject;
    ELSIF p_kind = 'server' AND p_before IS NULL AND p_after IS NULL THEN
        SELECT s.field_id INTO v_field FROM servers s WHERE s.id = v_subject;
    ELSIF p_kind = 'user' AND p_before IS NULL AND p_after IS NULL THEN
        SELECT coalesce(u.field_id, d.field_id) INTO v_field FROM users u
          LEFT JOIN departments d ON d.id = u.department_id
         WHERE u.id = v_subject;
    ELSIF p_kind = 'job' THEN
        SELECT coalesce(j.scope_field_id, d.field_id) INTO v_field FROM jobs j
          LEFT JOIN departments d ON d.id = j.scope_department_id
         WHERE j.id = v_subject;
    ELSIF p_kind = 'login' THEN
        SELECT coalesce(u.field_id, d.field_id) INTO v_field FROM users u
          LEFT JOIN departments d ON d.id = u.department_id
         WHERE lower(u.username) = lower(p_subject);
    END IF;
    v_found := v_found || v_field;
    RETURN coalesce((SELECT array_agg(DISTINCT x) FROM unnest(v_found) x WHERE x IS NOT NULL), '{}');
END;
$$;
