-- Search split across the cluster (search = "splits"): immutable tantivy splits in S3, one
-- partition of mailboxes each (hash of the mailbox mod 16), registered here.

-- The partition of each feed entry's mailbox, so that each partition's indexer reads only
-- its own entries. NULL for entries written before this migration: the splits' bootstrap
-- starts after them.
-- `fresh`: the entry is the item's ingest (no split holds an older form of it).
ALTER TABLE index_feed ADD COLUMN partition smallint;
ALTER TABLE index_feed ADD COLUMN fresh boolean NOT NULL DEFAULT false;
CREATE INDEX index_feed_by_partition ON index_feed (partition, sequence);

-- Every split: staged before its object is written, published (with the checkpoint, in one
-- transaction) once it is searchable, retired when a merge replaced it. Staged and retired
-- splits are doomed after a grace period (searches still reading them keep their files),
-- which no publish can undo, and then deleted, object and row.
CREATE TABLE splits (
    id text PRIMARY KEY,
    partition smallint NOT NULL,
    state text NOT NULL CHECK (state IN ('staged', 'published', 'retired', 'doomed')),
    -- Feed entries of the partition up to max_seq are in it (or in newer splits); it holds
    -- no text of an item destroyed by an entry up to there.
    max_seq bigint NOT NULL,
    min_created_us bigint,
    max_created_us bigint,
    num_docs bigint NOT NULL,
    bytes bigint NOT NULL,
    version_id text NOT NULL DEFAULT '',
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX splits_by_state ON splits (state, partition);

-- How far each partition's indexer has read the feed. A partition without a row has not been
-- bootstrapped; the feed is kept for the slowest partition.
CREATE TABLE split_checkpoints (
    partition smallint PRIMARY KEY,
    sequence bigint NOT NULL
);

-- Delete sets: the documents of item `id` in splits of `partition` whose max_seq is below
-- `sequence` are no longer its current form (it moved, changed or was destroyed). A merge
-- leaves them out of its output; the tombstones below every live split's max_seq are then
-- deleted.
CREATE TABLE split_tombstones (
    partition smallint NOT NULL,
    id bytea NOT NULL,
    sequence bigint NOT NULL,
    -- The item was destroyed: its text must leave the splits' files (by a merge) within
    -- the erasure bound.
    erase boolean NOT NULL,
    PRIMARY KEY (partition, sequence, id)
);

-- Moves on every publish and retirement: searchers reopen their view when it changed.
-- `bootstrap_at`: the feed head when the bootstrap (splits of every stored item) began; the
-- partitions' checkpoints start there. `bootstrapped`: the bootstrap's splits are published.
CREATE TABLE split_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint NOT NULL,
    bootstrap_at bigint,
    bootstrapped boolean NOT NULL DEFAULT false
);
INSERT INTO split_head (generation) VALUES (0);
