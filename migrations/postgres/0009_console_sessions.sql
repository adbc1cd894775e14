-- PostgreSQL twin of migrations/sqlite/0009_console_sessions.sql: console sign-in sessions.
CREATE TABLE console_sessions (
    token_sha256 VARCHAR(64) PRIMARY KEY NOT NULL,
    access_key_id VARCHAR(64) NOT NULL,
    csrf_token VARCHAR(64) NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_ms);
