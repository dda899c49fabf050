-- Interactions of cluster mode. The content of each is an S3 object under Object Lock
-- (`interactions/<id>`, version `version_id`); its row holds what listing, retention and
-- idempotency need. Ids are ULIDs as 16 big-endian bytes.
CREATE TABLE items (
    id bytea PRIMARY KEY CHECK (length(id) = 16),
    mailbox text NOT NULL,
    client_key text NOT NULL,
    thread text NOT NULL,
    created_us bigint NOT NULL,
    content_sha256 bytea NOT NULL CHECK (length(content_sha256) = 32),
    -- store::ItemFacts::encode: what planning reads, without decoding content.
    facts bytea NOT NULL,
    version_id text NOT NULL,
    -- NULL: ACTIVE; otherwise the holds-area location as JSON (reason, moved_at).
    location text,
    -- What was attached later (domain::Annex as JSON); NULL: nothing.
    annex text,
    -- Idempotency across every node: one item per (mailbox, client_key).
    UNIQUE (mailbox, client_key)
);
CREATE INDEX items_active_by_mailbox ON items (mailbox, created_us, id) WHERE location IS NULL;
CREATE INDEX items_active_by_thread ON items (mailbox, thread, created_us, id)
    WHERE location IS NULL AND thread <> '';
-- When the sweeper must look at an item next.
CREATE TABLE due (
    at_us bigint NOT NULL,
    id bytea NOT NULL,
    PRIMARY KEY (at_us, id)
);
-- The index feed: items whose searchable form changed, in commit order. A writer takes its
-- sequences from the one row of index_feed_head, whose row lock it holds until it commits,
-- so a reader never sees a later sequence before an earlier one.
CREATE TABLE index_feed (
    sequence bigint PRIMARY KEY CHECK (sequence > 0),
    id bytea NOT NULL
);
CREATE TABLE index_feed_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last bigint NOT NULL,
    -- Entries up to here are deleted: a reader behind it must rebuild its index.
    trimmed bigint NOT NULL DEFAULT 0
);
INSERT INTO index_feed_head (last) VALUES (0);
-- How far each node's index has read the feed; entries every reader has read are deleted.
-- A reader not seen for a day no longer holds the feed back (it rebuilds when it returns).
CREATE TABLE feed_readers (
    reader text PRIMARY KEY,
    position bigint NOT NULL,
    seen_at timestamptz NOT NULL
);
-- What is kept of each destroyed item (store::Disposition as JSON).
CREATE TABLE dispositions (
    purged_us bigint NOT NULL,
    id bytea NOT NULL,
    mailbox text NOT NULL,
    record text NOT NULL,
    PRIMARY KEY (purged_us, id)
);
CREATE INDEX dispositions_by_mailbox ON dispositions (mailbox, purged_us, id);
-- Destroyed items whose traces may still be in files (dead rows not yet vacuumed, an object
-- version the engine has not yet deleted).
CREATE TABLE erasure (
    destroyed_us bigint NOT NULL,
    id bytea NOT NULL,
    PRIMARY KEY (destroyed_us, id)
);
-- Object versions that no item row names, or may not: marked by an ingest before it writes
-- objects (version_id '', every version of the key) and cleared when its rows commit; marked
-- by a destruction in its transaction and cleared once the engine has deleted the version.
-- The janitor deletes what is left once the engine's lock allows.
CREATE TABLE object_gc (
    object_key text NOT NULL,
    version_id text NOT NULL DEFAULT '',
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (object_key, version_id)
);
-- OTLP trace states (see app::otlp), forgotten after forget_us.
CREATE TABLE trace_states (
    key bytea PRIMARY KEY,
    value bytea NOT NULL,
    forget_us bigint NOT NULL
);
CREATE INDEX trace_states_by_time ON trace_states (forget_us);
