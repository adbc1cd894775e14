-- MySQL/MariaDB twin of migrations/sqlite/0009_console_sessions.sql: console sign-in sessions.
CREATE TABLE console_sessions (
    token_sha256 VARCHAR(64) NOT NULL PRIMARY KEY,
    access_key_id VARCHAR(64) NOT NULL,
    csrf_token VARCHAR(64) NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    INDEX console_sessions_expires (expires_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
