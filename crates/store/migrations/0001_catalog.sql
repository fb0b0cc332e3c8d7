-- Channel definitions: the JSON spec is the source of truth; id is its key.
CREATE TABLE IF NOT EXISTS channels (
    id          TEXT PRIMARY KEY NOT NULL,
    spec        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- One CMAF header per (channel, rendition, feed): the feeds' headers should be identical; the
-- origin serves the first one and a mismatch is reported.
CREATE TABLE IF NOT EXISTS inits (
    channel     TEXT NOT NULL,
    rendition   TEXT NOT NULL,
    feed        TEXT NOT NULL,
    blob_key    TEXT NOT NULL,
    track       TEXT NOT NULL,
    stored_at   INTEGER NOT NULL,
    PRIMARY KEY (channel, rendition, feed)
);

-- The segment index: one kept copy per (channel, rendition, n). Listed only after its bytes
-- are stored; never rewritten.
CREATE TABLE IF NOT EXISTS segments (
    channel     TEXT NOT NULL,
    rendition   TEXT NOT NULL,
    n           INTEGER NOT NULL,
    feed        TEXT NOT NULL,
    start       INTEGER NOT NULL,
    duration    INTEGER NOT NULL,
    timescale   INTEGER NOT NULL,
    byte_len    INTEGER NOT NULL,
    blob_key    TEXT NOT NULL,
    stored_at   INTEGER NOT NULL,
    PRIMARY KEY (channel, rendition, n)
) WITHOUT ROWID;
