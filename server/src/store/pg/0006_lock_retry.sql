-- Items whose object locks the engine did not accept when the sweeper last synced them
-- (throttled, unreachable, refused): synced again, oldest first, until it does.
CREATE TABLE lock_retry (
    id bytea PRIMARY KEY CHECK (length(id) = 16),
    since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lock_retry_by_since ON lock_retry (since);
