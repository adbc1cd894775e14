-- MySQL/MariaDB twin of migrations/sqlite/0003_versions.sql: versions and aliases. Charset,
-- collation and sizes: see 0001_init.sql.
ALTER TABLE functions ADD COLUMN last_version_id BIGINT NOT NULL DEFAULT 0;

CREATE TABLE function_versions (
    function_name      VARCHAR(128) NOT NULL,
    version_id         BIGINT NOT NULL,        -- 1, 2, ...
    description        TEXT NOT NULL,
    config             MEDIUMTEXT NOT NULL,    -- JSON of model::FunctionConfig, frozen
    code_checksum      VARCHAR(64) NOT NULL,   -- the package it runs (kept while any version uses it)
    code_size          BIGINT NOT NULL,
    revision           BIGINT NOT NULL,        -- taken at publish; instances serve one revision
    created_time       VARCHAR(64) NOT NULL,
    last_modified_time VARCHAR(64) NOT NULL,
    PRIMARY KEY (function_name, version_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
-- Counting a code package's references (garbage collection of unused packages).
CREATE INDEX function_versions_by_code ON function_versions (code_checksum);

-- An alias routes to version_id, except a share additional_weight (0..1) that goes to
-- additional_version_id (both NULL: no canary).
CREATE TABLE function_aliases (
    function_name         VARCHAR(128) NOT NULL,
    alias_name            VARCHAR(128) NOT NULL,
    version_id            BIGINT NOT NULL,
    additional_version_id BIGINT,
    additional_weight     DOUBLE,
    description           TEXT NOT NULL,
    created_time          VARCHAR(64) NOT NULL,
    last_modified_time    VARCHAR(64) NOT NULL,
    PRIMARY KEY (function_name, alias_name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
