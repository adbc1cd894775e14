-- Triggers (model::trigger), one row per (function, trigger name). trigger_config is the JSON
-- string exactly as the caller sent it (echoed back byte for byte); the engines that run
-- timers and Kafka consumers find theirs by type. Rows go with their function only when it is
-- deleted (DeleteFunction refuses while triggers remain: FC's FunctionNotEmpty).
CREATE TABLE triggers (
    function_name      TEXT NOT NULL,
    trigger_name       TEXT NOT NULL,
    trigger_id         TEXT NOT NULL,
    trigger_type       TEXT NOT NULL,      -- http | timer | eventbridge
    trigger_config     TEXT NOT NULL,      -- verbatim JSON string
    qualifier          TEXT NOT NULL,      -- LATEST, a version id or an alias name
    description        TEXT NOT NULL,
    source_arn         TEXT NOT NULL,
    invocation_role    TEXT NOT NULL,
    created_time       TEXT NOT NULL,
    last_modified_time TEXT NOT NULL,
    PRIMARY KEY (function_name, trigger_name)
);
-- The engines' scans (all timers, all Kafka triggers).
CREATE INDEX triggers_by_type ON triggers (trigger_type);
