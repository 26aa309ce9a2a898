-- drctl catalog, schema 2: the scheduled runs daemons have claimed, so that with several replicas on
-- one (PostgreSQL) catalog each slot runs once. `slot` is the fire time (RFC 3339 UTC).
CREATE TABLE schedule_claims (
    job         TEXT NOT NULL,
    kind        TEXT NOT NULL,      -- backup | verify
    slot        TEXT NOT NULL,
    replica     TEXT NOT NULL,      -- host:pid of the daemon that ran it
    claimed_at  TEXT NOT NULL,
    PRIMARY KEY (job, kind, slot)
);
