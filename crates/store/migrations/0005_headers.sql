-- Every distinct CMAF header of a rendition, named by a hash of its bytes (16 hex digits):
-- pipelines whose encoder settings differ (a rolling upgrade) deliver different headers, and
-- each listed segment names the one it decodes with.
CREATE TABLE IF NOT EXISTS headers (
    channel     TEXT NOT NULL,
    rendition   TEXT NOT NULL,
    id          TEXT NOT NULL,
    blob_key    TEXT NOT NULL,
    stored_at   INTEGER NOT NULL,
    PRIMARY KEY (channel, rendition, id)
);

-- The header a segment decodes with; NULL for segments listed before headers were named,
-- which decode with their rendition's first header in `inits`.
ALTER TABLE segments ADD COLUMN header TEXT;

-- How many times the rendition's header changed up to this segment: what its playlists'
-- EXT-X-DISCONTINUITY-SEQUENCE is built from, so retention and restarts never rewind it.
ALTER TABLE segments ADD COLUMN disc INTEGER NOT NULL DEFAULT 0;

-- Where the channel's DASH Periods begin: a segment at which some rendition's header changed.
CREATE TABLE IF NOT EXISTS periods (
    channel     TEXT NOT NULL,
    n           INTEGER NOT NULL,
    start_ms    INTEGER NOT NULL,
    PRIMARY KEY (channel, n)
);

-- Finds the segments listed before headers were named, once, at start-up.
CREATE INDEX IF NOT EXISTS segments_without_header ON segments (channel, rendition)
    WHERE header IS NULL;
