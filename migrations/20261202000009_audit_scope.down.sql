DROP INDEX audit_events_action_idx;
DROP INDEX audit_events_actor_idx;
DROP INDEX audit_events_field_idx;
DROP TRIGGER audit_events_field ON audit_events;
DROP FUNCTION audit_events_set_field();
DROP FUNCTION audit_event_field(text, text, jsonb, jsonb);
ALTER TABLE audit_events DROP COLUMN field_id;
