-- The locks each item's object carries in the engine, as holdfast last set them: its
-- retention date (NULL: none) and mode, and its legal hold. The sweeper compares them with
-- what the rules in force want and changes only what differs.
ALTER TABLE items
    ADD COLUMN lock_until_us bigint,
    ADD COLUMN lock_compliance boolean NOT NULL DEFAULT false,
    ADD COLUMN legal_hold boolean NOT NULL DEFAULT false;
