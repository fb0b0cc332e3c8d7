-- The inputs a node has a publisher on (comma-separated `channel/input`), renewed with its
-- heartbeat: where a cluster's contribution feeds arrive.
ALTER TABLE nodes ADD COLUMN inputs TEXT NOT NULL DEFAULT '';
