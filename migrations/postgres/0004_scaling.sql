-- PostgreSQL twin of migrations/sqlite/0004_scaling.sql: scaling controls on the function row,
-- and provision configs. The switch is an integer (0/1), as on the other engines, so one
-- query reads it everywhere.
ALTER TABLE functions
    ADD COLUMN reserved_concurrency BIGINT,                   -- NULL: no reservation
    ADD COLUMN invocation_disabled  BIGINT NOT NULL DEFAULT 0, -- 1: calls refused
    ADD COLUMN disabled_reason      TEXT NOT NULL DEFAULT '';

CREATE TABLE provision_configs (
    function_name      TEXT COLLATE "C" NOT NULL,
    qualifier          TEXT COLLATE "C" NOT NULL,
    target             BIGINT NOT NULL,    -- instances to keep, 0..=10000
    config             TEXT NOT NULL,      -- JSON of model::scaling::ProvisionConfig
    created_time       TEXT NOT NULL,
    last_modified_time TEXT NOT NULL,
    PRIMARY KEY (function_name, qualifier)
);
