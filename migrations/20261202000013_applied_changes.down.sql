DROP TABLE applied_changes;
