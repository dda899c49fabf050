-- Where each node answers leaf searches (search = "splits", [cluster] advertise): the root
-- of a search sends each live node (one renewing its `split-node/<holder>` lease) the
-- splits rendezvous hashing gives it.
CREATE TABLE search_nodes (
    holder text PRIMARY KEY,
    address text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
