ALTER TABLE projects DROP COLUMN generation;
