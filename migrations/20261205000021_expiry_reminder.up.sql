-- When the owner of a project with a time to live was told it is about to expire (once).
ALTER TABLE projects ADD COLUMN expiry_reminded_at timestamptz;
