-- Registry of identities: public key -> upstream avatar URL (and display name for initials).
CREATE TABLE IF NOT EXISTS identities (
    user_key     TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    upstream_url TEXT,
    display_name TEXT,
    updated_at   INTEGER NOT NULL
);
