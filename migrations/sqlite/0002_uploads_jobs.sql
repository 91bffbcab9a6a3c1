-- Signed upload grants and what arrived for them.
CREATE TABLE IF NOT EXISTS uploads (
    upload_id      TEXT PRIMARY KEY NOT NULL,
    user_key       TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    max_bytes      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    received_bytes INTEGER,
    created_at     INTEGER NOT NULL
);

-- Processing jobs: queued -> processing -> completed | failed. A processing job whose lease
-- (locked_until) ran out is claimed again: that is how work survives a kill -9.
CREATE TABLE IF NOT EXISTS jobs (
    job_id       TEXT PRIMARY KEY NOT NULL,
    user_key     TEXT NOT NULL,
    upload_id    TEXT NOT NULL,
    crop         TEXT,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_at       INTEGER NOT NULL,
    locked_until INTEGER,
    result       TEXT,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, run_at);

-- The current upload of each user.
CREATE TABLE IF NOT EXISTS avatars (
    user_key   TEXT PRIMARY KEY NOT NULL,
    version    TEXT NOT NULL,
    variants   TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Webhook outbox: persisted before delivery, delivered at least once.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    message_id   TEXT PRIMARY KEY NOT NULL,
    endpoint     TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_outbox (next_attempt);

-- Endpoints that answered 410 Gone.
CREATE TABLE IF NOT EXISTS webhook_disabled (
    endpoint    TEXT PRIMARY KEY NOT NULL,
    disabled_at INTEGER NOT NULL
);
