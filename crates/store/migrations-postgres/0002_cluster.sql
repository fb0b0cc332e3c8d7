-- Scale-out: the nodes of a cluster and the leases that place pipelines on them. Times are
-- the database's clock in Unix milliseconds; no node's clock is ever compared with them.

-- Every node that has run on this catalog: its roles, where the others reach it, and when it
-- last said it was alive.
CREATE TABLE IF NOT EXISTS nodes (
    id          TEXT PRIMARY KEY NOT NULL,
    roles       TEXT NOT NULL,
    url         TEXT NOT NULL,
    version     TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    started_ms  BIGINT NOT NULL,
    seen_ms     BIGINT NOT NULL,
    draining    BIGINT NOT NULL DEFAULT 0
);

-- Who runs pipeline a or b of a channel. `epoch` grows with every claim and fences the
-- holder's deliveries: the packager lists a segment only while its epoch is the current one.
-- `ready`: the holder's pipeline delivers segments (a drain or a rebalance moves the other
-- pipeline only then).
CREATE TABLE IF NOT EXISTS leases (
    channel     TEXT NOT NULL,
    feed        TEXT NOT NULL,
    holder      TEXT,
    epoch       BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    ready       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, feed)
);
