-- MySQL/MariaDB twin of migrations/sqlite/0006_triggers.sql: triggers. Charset, collation and
-- sizes: see 0001_init.sql (the config is MEDIUMTEXT: a timer's payload alone may be 128 KB).
CREATE TABLE triggers (
    function_name      VARCHAR(128) NOT NULL,
    trigger_name       VARCHAR(128) NOT NULL,
    trigger_id         VARCHAR(64) NOT NULL,
    trigger_type       VARCHAR(32) NOT NULL,   -- http | timer | eventbridge
    trigger_config     MEDIUMTEXT NOT NULL,    -- verbatim JSON string
    qualifier          VARCHAR(128) NOT NULL,
    description        TEXT NOT NULL,
    source_arn         TEXT NOT NULL,
    invocation_role    TEXT NOT NULL,
    created_time       VARCHAR(64) NOT NULL,
    last_modified_time VARCHAR(64) NOT NULL,
    PRIMARY KEY (function_name, trigger_name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX triggers_by_type ON triggers (trigger_type);
