-- 0002_host_reports.sql - what host agents' reports (POST /v1/hosts/{name}/report)
-- need beyond 0001: a stable host name to upsert by, the GPUs' total memory,
-- an agent-chosen instance name to upsert instances by, and the completed
-- loads, kept once each (a retried report must not count a load twice in the
-- bandwidth EWMA) together with what the estimator predicted for them.

-- The host's identity as its agent names it (a node name); NULL for rows
-- registered before reports existed. A report adopts a NULL-named row that
-- has its address.
ALTER TABLE hosts ADD COLUMN name text UNIQUE;
ALTER TABLE hosts ADD COLUMN gpu_bytes bigint NOT NULL DEFAULT 0 CHECK (gpu_bytes >= 0);

-- The agent's name for an instance, unique on its host.
ALTER TABLE instances ADD COLUMN name text;
CREATE UNIQUE INDEX instances_host_name_idx ON instances (host, name);

CREATE TABLE load_samples (
    host               bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    id                 text NOT NULL,                   -- the agent's load id
    checkpoint         text NOT NULL,                   -- checkpoint URI
    tier               text NOT NULL CHECK (tier IN ('dram', 'ssd', 'peer', 'remote')),
    bytes              bigint NOT NULL CHECK (bytes >= 0),
    ms                 double precision NOT NULL CHECK (ms > 0),
    predicted_ms       double precision NOT NULL DEFAULT 0,  -- the estimate before this sample
    bps_after          double precision NOT NULL DEFAULT 0,  -- the tier's EWMA after it
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, id)
);
CREATE INDEX load_samples_time_idx ON load_samples (created_at);
