-- PostgreSQL twin of migrations/sqlite/0003_versions.sql: versions and aliases.
ALTER TABLE functions ADD COLUMN last_version_id BIGINT NOT NULL DEFAULT 0;

CREATE TABLE function_versions (
    function_name      TEXT COLLATE "C" NOT NULL,
    version_id         BIGINT NOT NULL,    -- 1, 2, ...
    description        TEXT NOT NULL,
    config             TEXT NOT NULL,      -- JSON of model::FunctionConfig, frozen
    code_checksum      TEXT NOT NULL,      -- the package it runs (kept while any version uses it)
    code_size          BIGINT NOT NULL,
    revision           BIGINT NOT NULL,    -- taken at publish; instances serve one revision
    created_time       TEXT NOT NULL,
    last_modified_time TEXT NOT NULL,
    PRIMARY KEY (function_name, version_id)
);
-- Counting a code package's references (garbage collection of unused packages).
CREATE INDEX function_versions_by_code ON function_versions (code_checksum);

-- An alias routes to version_id, except a share additional_weight (0..1) that goes to
-- additional_version_id (both NULL: no canary).
CREATE TABLE function_aliases (
    function_name         TEXT COLLATE "C" NOT NULL,
    alias_name            TEXT COLLATE "C" NOT NULL,
    version_id            BIGINT NOT NULL,
    additional_version_id BIGINT,
    additional_weight     DOUBLE PRECISION,
    description           TEXT NOT NULL,
    created_time          TEXT NOT NULL,
    last_modified_time    TEXT NOT NULL,
    PRIMARY KEY (function_name, alias_name)
);
