-- drctl catalog, schema 1. Portable SQL (SQLite and PostgreSQL): TEXT timestamps in RFC 3339 UTC.
CREATE TABLE backups (
    id              TEXT PRIMARY KEY,
    job             TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,      -- ok | partial | failed
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    plaintext_bytes BIGINT,
    stored_bytes    BIGINT,
    error           TEXT,
    manifest        TEXT                -- the manifest JSON; NULL for failed runs
);
CREATE INDEX backups_job_started ON backups (job, started_at);
CREATE TABLE copies (
    backup_id  TEXT NOT NULL,
    target     TEXT NOT NULL,
    stored_at  TEXT NOT NULL,
    PRIMARY KEY (backup_id, target)
);
