-- Live-to-VOD harvest jobs: a past range of a channel copied into a self-contained asset.
CREATE TABLE IF NOT EXISTS harvests (
    name        TEXT PRIMARY KEY NOT NULL,
    channel     TEXT NOT NULL,
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL,
    state       TEXT NOT NULL,
    progress    INTEGER NOT NULL,
    detail      TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS harvests_by_channel ON harvests (channel, created_ms);
