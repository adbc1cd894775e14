-- MySQL/MariaDB twin of migrations/sqlite/0001_init.sql (same tables, columns and meaning).
-- utf8mb4_bin everywhere: keys compare case-sensitively and sort in code point order, as on
-- SQLite and PostgreSQL (the server's default charset may be latin1 and its collation
-- case-insensitive). Keys are VARCHAR (InnoDB cannot index TEXT whole); names, task ids and
-- qualifiers are at most 128 characters (model::function::is_valid_name). JSON documents and
-- payloads are MEDIUM* (16 MiB): TEXT/BLOB stop at 64 KiB.

-- Function metadata (intent). Instances are not stored: they are rebuilt from the agents.
CREATE TABLE functions (
    name               VARCHAR(128) NOT NULL PRIMARY KEY,
    function_id        VARCHAR(64) NOT NULL UNIQUE,
    config             MEDIUMTEXT NOT NULL,    -- JSON of model::FunctionConfig
    code_checksum      VARCHAR(64) NOT NULL,   -- CRC-64/XZ decimal; '' for image-only functions
    code_size          BIGINT NOT NULL,
    revision           BIGINT NOT NULL,        -- bumped on every update; instances serve one revision
    tags               MEDIUMTEXT NOT NULL,    -- JSON array of {Key, Value}
    created_time       VARCHAR(64) NOT NULL,
    last_modified_time VARCHAR(64) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Access keys. The secret is needed in clear to check HMAC signatures, so it is sealed
-- (ChaCha20-Poly1305 under the master key), never stored or logged in clear.
CREATE TABLE access_keys (
    access_key_id VARCHAR(128) NOT NULL PRIMARY KEY,
    secret_sealed BLOB NOT NULL,
    description   TEXT NOT NULL,
    created_time  VARCHAR(64) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
