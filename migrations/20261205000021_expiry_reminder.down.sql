ALTER TABLE projects DROP COLUMN expiry_reminded_at;
