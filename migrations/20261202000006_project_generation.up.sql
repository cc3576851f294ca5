-- Every change of a project (create, resize, delete, retry, a drift repair, a forced step)
-- starts a new generation. Deliveries carry the generation they were started for and write
-- only while it is still the project's, so a superseded delivery never writes.
ALTER TABLE projects ADD COLUMN generation bigint NOT NULL DEFAULT 0 CHECK (generation >= 0);
