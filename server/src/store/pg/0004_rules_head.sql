-- A counter of retention-rule changes (policies, holds), bumped in the transaction of each
-- change. A node's sweeper writes a step only while the counter still has the value it
-- decided by (it reads the row FOR SHARE in the step's transaction, so a change waits for
-- the step, or the step sees the change); nodes reload their policies when it moves.
CREATE TABLE rules_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint NOT NULL
);
INSERT INTO rules_head (generation) VALUES (0);
