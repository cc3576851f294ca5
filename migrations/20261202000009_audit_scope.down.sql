DROP INDEX audit_events_action_idx;
DROP INDEX audit_events_actor_idx;
DROP INDEX audit_events_fields_idx;
DROP TRIGGER audit_events_fields ON audit_events;
DROP FUNCTION audit_events_set_fields();
DROP FUNCTION audit_event_fields(text, text, jsonb, jsonb);
ALTER TABLE audit_events DROP COLUMN field_ids;
