-- requires: 20.5
-- requires: access_management
-- The reader role reads the pipeline database and nothing else (servers with SQL access
-- control, >= 20.5; 18.16 gets the same from deploy/local/clickhouse/users.xml: readonly=1).
--
-- Already true from 0007: socialroi_reader_role holds SELECT on this database only. Table
-- functions need CREATE TEMPORARY TABLE plus a source grant (URL, REMOTE for remote() and
-- cluster(), FILE, S3, MYSQL, ODBC, JDBC, HDFS, ...), dictionaries need dictGet, writes and
-- DDL their own grants: the role has none of them, so url(), remote(), file(), s3(),
-- cluster(), input() and dictGet are refused, and the server makes no request for it.
--
-- Added here:
-- * Other users' queries. Every user can read system.processes, system.query_log and
--   system.query_thread_log unless the server sets
--   access_control_improvements.select_from_system_db_requires_grant (README, "Least
--   privilege"). A row policy shows the reader role its own rows only; the second policy
--   of each pair keeps the tables whole for everyone else, since a table with a row policy
--   shows no rows to the users no policy names (unless users_without_row_policies_can_read_rows).
-- * A time limit: max_execution_time 60 s unless the query sets it (readonly = 2 lets
--   Grafana's plugin send its query timeout), at most 300 s.
ALTER SETTINGS PROFILE IF EXISTS socialroi_reader_profile SETTINGS readonly = 2, max_execution_time = 60 MAX 300 TO socialroi_reader_role;
CREATE ROW POLICY IF NOT EXISTS socialroi_reader_own ON system.processes FOR SELECT USING user = currentUser() TO socialroi_reader_role;
CREATE ROW POLICY IF NOT EXISTS socialroi_not_reader ON system.processes FOR SELECT USING 1 TO ALL EXCEPT socialroi_reader_role;
CREATE ROW POLICY IF NOT EXISTS socialroi_reader_own ON system.query_log FOR SELECT USING user = currentUser() TO socialroi_reader_role;
CREATE ROW POLICY IF NOT EXISTS socialroi_not_reader ON system.query_log FOR SELECT USING 1 TO ALL EXCEPT socialroi_reader_role;
CREATE ROW POLICY IF NOT EXISTS socialroi_reader_own ON system.query_thread_log FOR SELECT USING user = currentUser() TO socialroi_reader_role;
CREATE ROW POLICY IF NOT EXISTS socialroi_not_reader ON system.query_thread_log FOR SELECT USING 1 TO ALL EXCEPT socialroi_reader_role;
