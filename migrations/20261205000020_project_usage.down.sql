ALTER TABLE projects DROP COLUMN used_cpu, DROP COLUMN used_ram_gb, DROP COLUMN usage_at,
                     DROP COLUMN under_half_since;
