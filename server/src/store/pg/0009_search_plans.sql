-- Plans pinned by a search's first page (search = "splits"): the splits and tombstones it
-- read (holdfast.cluster.v1.PinnedPlan), so that any node can answer its later pages. A
-- plan lives as long as a page token does (an hour); older rows are deleted as new ones
-- are pinned.
CREATE TABLE search_plans (
    id bigint PRIMARY KEY,
    owner text NOT NULL,
    plan bytea NOT NULL,
    pinned_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX search_plans_by_age ON search_plans (pinned_at);
CREATE INDEX search_plans_by_owner ON search_plans (owner, pinned_at);
