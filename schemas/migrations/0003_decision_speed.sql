-- 0003_decision_speed.sql - keep a placement decision within 5 ms at 1,000
-- hosts (bench/reports/scheduler.md has the EXPLAIN ANALYZE behind this).
--
-- Heartbeats rewrite every host row every few seconds. With heartbeat
-- indexed, each rewrite adds an entry to every index of hosts, and dead
-- versions pile up in the index the ranking query scans. A decision reads
-- nearly every host anyway (a sequential scan of 1,000 rows is ~0.1 ms), so
-- the index goes; with free room left in each page (fillfactor) a
-- heartbeat becomes a HOT update: no index is touched, and the page prunes
-- its own dead versions.
DROP INDEX IF EXISTS hosts_heartbeat_idx;
ALTER TABLE hosts SET (fillfactor = 50);

-- Reservations outlive their TTL until deleted; the ranking query sums
-- only unexpired ones, and this index keeps that a range scan however many
-- expired rows remain.
CREATE INDEX reservations_expires_idx ON reservations (expires_at);
