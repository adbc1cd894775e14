-- MySQL/MariaDB twin of migrations/sqlite/0004_scaling.sql: scaling controls on the function
-- row, and provision configs. Charset, collation and sizes: see 0001_init.sql. The reason is
-- a VARCHAR (TEXT takes no default on older servers); the API keeps it to 256 characters.
ALTER TABLE functions
    ADD COLUMN reserved_concurrency BIGINT NULL,              -- NULL: no reservation
    ADD COLUMN invocation_disabled  BIGINT NOT NULL DEFAULT 0, -- 1: calls refused
    ADD COLUMN disabled_reason      VARCHAR(1024) NOT NULL DEFAULT '';

CREATE TABLE provision_configs (
    function_name      VARCHAR(128) NOT NULL,
    qualifier          VARCHAR(128) NOT NULL,
    target             BIGINT NOT NULL,        -- instances to keep, 0..=10000
    config             MEDIUMTEXT NOT NULL,    -- JSON of model::scaling::ProvisionConfig
    created_time       VARCHAR(64) NOT NULL,
    last_modified_time VARCHAR(64) NOT NULL,
    PRIMARY KEY (function_name, qualifier)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
