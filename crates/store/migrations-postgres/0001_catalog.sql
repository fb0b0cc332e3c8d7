-- The catalog on PostgreSQL: the schema of the SQLite migrations (../migrations) as it stands
-- after all of them, with 64-bit integers throughout. A later change adds a migration to both.

-- Channel definitions: the JSON spec is the source of truth; id is its key.
CREATE TABLE IF NOT EXISTS channels (
    id          TEXT PRIMARY KEY NOT NULL,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- The header each feed of a rendition delivers now (its latest init.mp4).
CREATE TABLE IF NOT EXISTS inits (
    channel     TEXT NOT NULL,
    rendition   TEXT NOT NULL,
    feed        TEXT NOT NULL,
    blob_key    TEXT NOT NULL,
    track       TEXT NOT NULL,
    stored_at   BIGINT NOT NULL,
    PRIMARY KEY (channel, rendition, feed)
);

-- Every distinct CMAF header of a rendition, named by a hash of its bytes (16 hex digits).
CREATE TABLE IF NOT EXISTS headers (
    channel     TEXT NOT NULL,
    rendition   TEXT NOT NULL,
    id          TEXT NOT NULL,
    blob_key    TEXT NOT NULL,
    stored_at   BIGINT NOT NULL,
    PRIMARY KEY (channel, rendition, id)
);

-- The segment index: one kept copy per (channel, rendition, n). Listed only after its bytes
-- are stored; never rewritten. Every range query walks the primary key.
CREATE TABLE IF NOT EXISTS segments (
    channel     TEXT NOT NULL,
    rendition   TEXT NOT NULL,
    n           BIGINT NOT NULL,
    feed        TEXT NOT NULL,
    start       BIGINT NOT NULL,
    duration    BIGINT NOT NULL,
    timescale   BIGINT NOT NULL,
    byte_len    BIGINT NOT NULL,
    blob_key    TEXT NOT NULL,
    stored_at   BIGINT NOT NULL,
    quality     BIGINT,
    header      TEXT,
    disc        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, rendition, n)
);
CREATE INDEX IF NOT EXISTS segments_without_header ON segments (channel, rendition)
    WHERE header IS NULL;

-- Where the channel's DASH Periods begin.
CREATE TABLE IF NOT EXISTS periods (
    channel     TEXT NOT NULL,
    n           BIGINT NOT NULL,
    start_ms    BIGINT NOT NULL,
    PRIMARY KEY (channel, n)
);

-- The structured event log of each channel.
CREATE TABLE IF NOT EXISTS events (
    id          BIGSERIAL PRIMARY KEY,
    channel     TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    source      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_channel ON events (channel, id);
CREATE INDEX IF NOT EXISTS events_by_time ON events (at_ms);

-- Live-to-VOD harvest jobs.
CREATE TABLE IF NOT EXISTS harvests (
    name        TEXT PRIMARY KEY NOT NULL,
    channel     TEXT NOT NULL,
    start_ms    BIGINT NOT NULL,
    end_ms      BIGINT NOT NULL,
    state       TEXT NOT NULL,
    progress    BIGINT NOT NULL,
    detail      TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS harvests_by_channel ON harvests (channel, created_ms);
