-- 0004_placement_index.sql - a placement reads only the hosts that can win
-- (bench/reports/scheduler.md): those holding the checkpoint or running it,
-- found through replicas and instances, and the few fastest-network hosts
-- with room among the rest. This index lets the latter stop after a few
-- rows in network order instead of summing every host's reservations. It
-- does not cover heartbeat, so heartbeats stay HOT updates (0003).
CREATE INDEX hosts_network_idx ON hosts (network_bps DESC, id);
