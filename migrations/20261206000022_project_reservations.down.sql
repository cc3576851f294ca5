DROP TRIGGER project_reservations_delete ON projects;
DROP TRIGGER project_reservations_update ON projects;
DROP TRIGGER project_reservations_insert ON projects;
DROP FUNCTION project_reservations_apply();
DROP TABLE project_reservations;
