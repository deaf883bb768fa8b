-- 0001_init.sql - the locality store (DESIGN.md, Placement): hosts and their
-- tiers, checkpoints and where their replicas sit, running instances,
-- reservations, and the usage ledger. Applied by thaw_sched_migrate inside
-- one transaction; schema_migrations is created by the migrator itself.
-- Sizes are bytes, bandwidths bytes/s, durations milliseconds.

CREATE TABLE hosts (
    id                 bigserial PRIMARY KEY,
    address            text NOT NULL UNIQUE,            -- host:port of its thaw-invoker
    n_gpus             integer NOT NULL DEFAULT 0 CHECK (n_gpus >= 0),
    gpu_free_bytes     bigint NOT NULL DEFAULT 0 CHECK (gpu_free_bytes >= 0),
    dram_bytes         bigint NOT NULL DEFAULT 0 CHECK (dram_bytes >= 0),
    dram_used          bigint NOT NULL DEFAULT 0 CHECK (dram_used >= 0),
    ssd_bytes          bigint NOT NULL DEFAULT 0 CHECK (ssd_bytes >= 0),
    ssd_used           bigint NOT NULL DEFAULT 0 CHECK (ssd_used >= 0),
    -- Measured (EWMA) bandwidth of each tier into the GPU, bytes/s; 0 = not measured yet.
    dram_to_gpu_bps    double precision NOT NULL DEFAULT 0 CHECK (dram_to_gpu_bps >= 0),
    ssd_bps            double precision NOT NULL DEFAULT 0 CHECK (ssd_bps >= 0),
    network_bps        double precision NOT NULL DEFAULT 0 CHECK (network_bps >= 0),
    heartbeat          timestamptz NOT NULL DEFAULT now()
);
-- Ranking reads only live hosts: those with a recent heartbeat.
CREATE INDEX hosts_heartbeat_idx ON hosts (heartbeat DESC);

CREATE TABLE checkpoints (
    id                 bigserial PRIMARY KEY,
    uri                text NOT NULL UNIQUE,
    bytes              bigint NOT NULL CHECK (bytes >= 0),
    n_partitions       integer NOT NULL DEFAULT 1 CHECK (n_partitions >= 1)
);

CREATE TABLE replicas (
    host               bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    checkpoint         bigint NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    tier               text NOT NULL CHECK (tier IN ('gpu', 'dram', 'ssd')),
    state              text NOT NULL DEFAULT 'ready'
                       CHECK (state IN ('loading', 'ready', 'evicting')),
    bytes              bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0),  -- resident so far
    last_use           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, checkpoint, tier)
);
-- "Where is checkpoint C?" is the ranking query's first step.
CREATE INDEX replicas_checkpoint_idx ON replicas (checkpoint, tier);

CREATE TABLE instances (
    id                 bigserial PRIMARY KEY,
    host               bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    model              bigint NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    state              text NOT NULL DEFAULT 'starting'
                       CHECK (state IN ('starting', 'ready', 'busy', 'migrating', 'stopping')),
    n_running          integer NOT NULL DEFAULT 0 CHECK (n_running >= 0),  -- running sequences
    tokens_in          bigint NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out         bigint NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_host_idx ON instances (host);
CREATE INDEX instances_model_idx ON instances (model, state);

-- A placement decision holds GPU memory on a host until the instance starts
-- or the reservation expires; written in the ranking transaction so two
-- decisions never double-book a GPU.
CREATE TABLE reservations (
    id                 bigserial PRIMARY KEY,
    host               bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    checkpoint         bigint NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    gpu_bytes          bigint NOT NULL CHECK (gpu_bytes >= 0),
    estimate_ms        double precision NOT NULL DEFAULT 0,
    reason             text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL
);
CREATE INDEX reservations_host_idx ON reservations (host, expires_at);

-- One row per activation; invokers may retry, so writers use
-- INSERT ... ON CONFLICT (activation_id) DO NOTHING.
CREATE TABLE usage_ledger (
    activation_id      text PRIMARY KEY,
    namespace          text NOT NULL DEFAULT '',
    action             text NOT NULL DEFAULT '',
    model              text NOT NULL DEFAULT '',
    prompt_tokens      integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens  integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    load_tier          text NOT NULL DEFAULT 'none'
                       CHECK (load_tier IN ('none', 'gpu', 'dram', 'ssd', 'peer', 'remote')),
    load_ms            double precision NOT NULL DEFAULT 0,
    gpu_ms             double precision NOT NULL DEFAULT 0,
    cold               boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_ledger_ns_time_idx ON usage_ledger (namespace, created_at);
