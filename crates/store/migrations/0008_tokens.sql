-- Bearer tokens of the control API. Only a hash of each secret is kept; a revoked token keeps
-- its row (the list shows it) until its name is given to a new one.
CREATE TABLE IF NOT EXISTS api_tokens (
    name        TEXT PRIMARY KEY NOT NULL,
    scope       TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_ms  INTEGER NOT NULL,
    revoked_ms  INTEGER
);
