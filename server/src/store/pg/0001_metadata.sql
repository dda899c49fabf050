-- Metadata and the audit log. Records are the same JSON the embedded store keeps, as text
-- (exactly as written); ids are ULIDs as 16 big-endian bytes, so that id order is key order.
CREATE TABLE meta (
    name bytea PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE tokens (
    sha256 bytea PRIMARY KEY CHECK (length(sha256) = 32),
    record text NOT NULL
);
CREATE TABLE policies (
    id bytea PRIMARY KEY CHECK (length(id) = 16),
    record text NOT NULL
);
CREATE TABLE holds (
    id bytea PRIMARY KEY CHECK (length(id) = 16),
    record text NOT NULL
);
CREATE TABLE cases (
    id bytea PRIMARY KEY CHECK (length(id) = 16),
    record text NOT NULL
);
CREATE TABLE audit_intents (
    id bytea PRIMARY KEY CHECK (length(id) = 16),
    record text NOT NULL
);
-- Appended under an advisory lock by whichever node writes, after checking that the first
-- entry follows the last one stored (see store::AuditTrail::append_audit_records).
CREATE TABLE audit_log (
    sequence bigint PRIMARY KEY CHECK (sequence > 0),
    record text NOT NULL
);
