-- drctl catalog, schema 3: restore drills (`drctl verify`) and the suspicious flag of backups.
-- One row per drill; `record` is the drill record JSON (the same as `<backup-id>.verify.json`).
CREATE TABLE drills (
    job              TEXT NOT NULL,
    backup_id        TEXT,               -- NULL when no backup could be found
    status           TEXT NOT NULL,      -- ok | failed
    started_at       TEXT NOT NULL,
    finished_at      TEXT NOT NULL,
    restore_seconds  DOUBLE PRECISION NOT NULL,
    record           TEXT NOT NULL,
    PRIMARY KEY (job, started_at)
);
CREATE INDEX drills_backup ON drills (backup_id);
-- why a committed backup looks suspicious (empty, or much smaller than the job's recent ones)
CREATE TABLE suspicious (
    backup_id  TEXT PRIMARY KEY,
    job        TEXT NOT NULL,
    reason     TEXT NOT NULL
);
