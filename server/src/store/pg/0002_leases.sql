-- Leases of singleton jobs (the sweeper, indexers): one holder until `expires_at`, by the
-- database's clock so that the nodes' clocks do not matter. A released lease keeps its row
-- (expired), so that its epoch keeps growing.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
