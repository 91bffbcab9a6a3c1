-- One job per upload: repeated or concurrent starts for one upload get the existing job. Older
-- databases may hold duplicates from before this rule; the first job of each upload is kept.
DELETE FROM jobs WHERE rowid NOT IN (SELECT MIN(rowid) FROM jobs GROUP BY upload_id);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_per_upload ON jobs (upload_id);
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs (user_key, status);

-- An original that was processed or deleted no longer counts against its user's quota of
-- pending originals (AVATAR_MAX_PENDING_ORIGINALS / _BYTES).
ALTER TABLE uploads ADD COLUMN original_settled INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS uploads_by_user ON uploads (user_key, created_at);
