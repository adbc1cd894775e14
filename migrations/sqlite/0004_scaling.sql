-- Scaling controls. Reserved concurrency and the invocation switch are columns of the function
-- (model::FunctionControls): they are not part of its config or code, so setting them changes
-- neither `revision` nor `last_modified_time`, and running instances keep serving. A version's
-- record carries its function's controls (read through the join in store/versions.rs).
ALTER TABLE functions ADD COLUMN reserved_concurrency INTEGER;                 -- NULL: no reservation
ALTER TABLE functions ADD COLUMN invocation_disabled INTEGER NOT NULL DEFAULT 0; -- 1: calls refused
ALTER TABLE functions ADD COLUMN disabled_reason TEXT NOT NULL DEFAULT '';

-- PutProvisionConfig, one row per (function, qualifier). The qualifier is LATEST or an alias
-- name (never a version id); the rows go with their function, and an alias with a row cannot
-- be deleted.
CREATE TABLE provision_configs (
    function_name      TEXT NOT NULL,
    qualifier          TEXT NOT NULL,
    target             INTEGER NOT NULL,   -- instances to keep, 0..=10000
    config             TEXT NOT NULL,      -- JSON of model::scaling::ProvisionConfig
    created_time       TEXT NOT NULL,
    last_modified_time TEXT NOT NULL,
    PRIMARY KEY (function_name, qualifier)
);
