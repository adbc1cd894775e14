-- Console sign-in sessions (crate::console::session). Kept in the metadata store so every
-- controller behind a load balancer sees a session made through another, and signing out
-- through one ends it on all. The cookie holds a random token; only its SHA-256 is stored, so
-- reading this table does not give anyone a usable cookie. Expired rows are refused on read
-- and deleted at the next sign-in.
CREATE TABLE console_sessions (
    token_sha256 TEXT PRIMARY KEY NOT NULL,
    access_key_id TEXT NOT NULL,
    -- The token the console sends back in x-nubis-csrf on every change.
    csrf_token TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_ms);
