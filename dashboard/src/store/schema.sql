-- The dashboard store's schema (SQLite), applied by `Store::open` on every start:
-- every statement is idempotent (IF NOT EXISTS). Times are Unix ms, rates pps.
CREATE TABLE IF NOT EXISTS samples (
    gateway_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    mode TEXT NOT NULL,
    pass_pps REAL NOT NULL,
    drop_blocklist_pps REAL NOT NULL,
    drop_syn_rate_pps REAL NOT NULL,
    drop_pkt_rate_pps REAL NOT NULL,
    would_drop_pps REAL NOT NULL,
    flows_per_s REAL NOT NULL,
    alerts_per_min REAL NOT NULL,
    flows_exported INTEGER NOT NULL,
    records_dropped_total INTEGER NOT NULL,
    counters TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_at ON samples(at_ms);
CREATE INDEX IF NOT EXISTS samples_gw_at ON samples(gateway_id, at_ms);
CREATE TABLE IF NOT EXISTS flows (
    gateway_id TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    src TEXT NOT NULL, dst TEXT NOT NULL,
    sport INTEGER NOT NULL, dport INTEGER NOT NULL, proto INTEGER NOT NULL,
    packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    end_reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_received ON flows(received_ms);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    gateway_id TEXT NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_at ON alerts(at_ms);
CREATE TABLE IF NOT EXISTS verdicts (
    id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_at ON verdicts(at_ms);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_at ON commands(at_ms);
CREATE TABLE IF NOT EXISTS acks (
    id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS acks_at ON acks(at_ms);
CREATE TABLE IF NOT EXISTS devices (
    address TEXT PRIMARY KEY,
    name TEXT,
    detector_id TEXT,
    score REAL, level TEXT,
    behavioural REAL, vulnerability REAL, reputation REAL,
    reason TEXT,
    scored_ms INTEGER,
    last_seen_ms INTEGER
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    online INTEGER,
    status_at_ms INTEGER,
    version TEXT,
    mode TEXT,
    interfaces TEXT NOT NULL DEFAULT '[]',
    maps TEXT NOT NULL DEFAULT '[]',
    last_counters_ms INTEGER
);
-- Until issue 16 a `blocks` table held blocks guessed from verdicts, commands
-- and acks; blocks are now what the gateways publish (gateway_state), so the
-- guesses are dropped.
DROP TABLE IF EXISTS blocks;
-- What each gateway enforces: its last state snapshot with the deltas that
-- followed applied (body: tad_wire::GatewayState JSON). `synced` = deltas are
-- applied; 0 after a gap and at every open (Store::open) until the next snapshot.
CREATE TABLE IF NOT EXISTS gateway_state (
    gateway_id TEXT PRIMARY KEY,
    rev INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    synced INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS acks_id ON acks(id);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
-- Every threshold settings id this dashboard recorded as in force (newest
-- MAX_SETTINGS_HISTORY kept), so a late bus echo of an older set is recognised
-- and cannot replace a newer one (store/events.rs).
CREATE TABLE IF NOT EXISTS settings_history (
    id TEXT PRIMARY KEY,
    issued_at_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
-- Detector settings (store/settings.rs): the last schema each detector published
-- (retained on tad/v1/det/<det>/settings/schema) and, per detector, the last ack
-- of each threshold settings id with the hash of its audit record.
CREATE TABLE IF NOT EXISTS settings_schemas (
    detector_id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings_acks (
    detector_id TEXT NOT NULL,
    settings_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL,
    PRIMARY KEY (detector_id, settings_id)
);
CREATE INDEX IF NOT EXISTS settings_acks_at ON settings_acks(detector_id, at_ms);
