-- requires: 20.5
-- requires: access_management
-- Least privilege on servers with SQL access control (ClickHouse >= 20.5), applied only by
-- a migrating user that can manage access (skipped, with a log line, on 18.16, on chDB and
-- for users without access_management; 18.16 gets the same split from users.xml profiles,
-- see deploy/local/clickhouse/users.xml).
--
-- Roles only, no users: a password cannot come from a migration file (it would be a secret
-- in the repository, identical on every install, and frozen by released.txt). The operator
-- creates the users with their own passwords and gives them a role, e.g.:
--   CREATE USER IF NOT EXISTS socialroi_ingest IDENTIFIED WITH sha256_password BY '...'
--       HOST LOCAL DEFAULT ROLE socialroi_ingest_role;
--   GRANT socialroi_ingest_role TO socialroi_ingest;
--   CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '...'
--       DEFAULT ROLE socialroi_reader_role;
--   GRANT socialroi_reader_role TO grafana;
--
-- socialroi_ingest_role: SELECT and INSERT on the pipeline database (the one this migration
--   runs in: `ON *` is the current database); no CREATE, ALTER, DROP, TRUNCATE. The worker
--   started with such a user runs no DDL once an admin has applied every migration.
-- socialroi_reader_role: SELECT on the pipeline database, with the settings profile
--   socialroi_reader_profile (readonly = 2: reads, and SET of query settings, which the
--   Grafana ClickHouse plugin needs; no INSERT, no DDL, readonly itself cannot be changed).
CREATE ROLE IF NOT EXISTS socialroi_ingest_role;
CREATE ROLE IF NOT EXISTS socialroi_reader_role;
GRANT SELECT, INSERT ON * TO socialroi_ingest_role;
GRANT SELECT ON * TO socialroi_reader_role;
CREATE SETTINGS PROFILE IF NOT EXISTS socialroi_reader_profile SETTINGS readonly = 2 TO socialroi_reader_role;
