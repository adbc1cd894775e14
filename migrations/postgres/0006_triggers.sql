-- PostgreSQL twin of migrations/sqlite/0006_triggers.sql: triggers.
CREATE TABLE triggers (
    function_name      TEXT COLLATE "C" NOT NULL,
    trigger_name       TEXT COLLATE "C" NOT NULL,
    trigger_id         TEXT NOT NULL,
    trigger_type       TEXT NOT NULL,      -- http | timer | eventbridge
    trigger_config     TEXT NOT NULL,      -- verbatim JSON string
    qualifier          TEXT COLLATE "C" NOT NULL,
    description        TEXT NOT NULL,
    source_arn         TEXT NOT NULL,
    invocation_role    TEXT NOT NULL,
    created_time       TEXT NOT NULL,
    last_modified_time TEXT NOT NULL,
    PRIMARY KEY (function_name, trigger_name)
);
CREATE INDEX triggers_by_type ON triggers (trigger_type);
