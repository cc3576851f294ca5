ALTER TABLE projects DROP COLUMN failed_from;
