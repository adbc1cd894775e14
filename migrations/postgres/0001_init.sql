-- PostgreSQL twin of migrations/sqlite/0001_init.sql (same tables, columns and meaning).
-- Keys and sorted text use COLLATE "C" (byte order = code point order for UTF-8), so listings
-- page in the same order as on SQLite and MySQL whatever the database's default collation.

-- Function metadata (intent). Instances are not stored: they are rebuilt from the agents.
CREATE TABLE functions (
    name               TEXT COLLATE "C" PRIMARY KEY,
    function_id        TEXT NOT NULL UNIQUE,
    config             TEXT NOT NULL,      -- JSON of model::FunctionConfig
    code_checksum      TEXT NOT NULL,      -- CRC-64/XZ decimal; '' for image-only functions
    code_size          BIGINT NOT NULL,
    revision           BIGINT NOT NULL,    -- bumped on every update; instances serve one revision
    tags               TEXT NOT NULL,      -- JSON array of {Key, Value}
    created_time       TEXT NOT NULL,
    last_modified_time TEXT NOT NULL
);

-- Access keys. The secret is needed in clear to check HMAC signatures, so it is sealed
-- (ChaCha20-Poly1305 under the master key), never stored or logged in clear.
CREATE TABLE access_keys (
    access_key_id TEXT COLLATE "C" PRIMARY KEY,
    secret_sealed BYTEA NOT NULL,
    description   TEXT NOT NULL,
    created_time  TEXT NOT NULL
);
