-- MySQL/MariaDB twin of migrations/sqlite/0002_async.sql: async invoke configs and task
-- records. The embedded queue's table (queue_messages) is SQLite-only: with MySQL the async
-- queue is Kafka (see queue::embedded). Charset and sizes: see 0001_init.sql.

-- PutAsyncInvokeConfig, one row per (function, qualifier).
CREATE TABLE async_invoke_configs (
    function_name      VARCHAR(128) NOT NULL,
    qualifier          VARCHAR(128) NOT NULL,
    config             MEDIUMTEXT NOT NULL,    -- JSON of model::async_task::AsyncConfig
    created_time       VARCHAR(64) NOT NULL,
    last_modified_time VARCHAR(64) NOT NULL,
    PRIMARY KEY (function_name, qualifier)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per async invocation; the truth for its status (the queue message only points here).
CREATE TABLE async_tasks (
    function_name         VARCHAR(128) NOT NULL,
    task_id               VARCHAR(128) NOT NULL,
    qualifier             VARCHAR(128) NOT NULL,
    request_id            VARCHAR(128) NOT NULL,
    status                VARCHAR(32) NOT NULL,   -- model::async_task::TaskStatus name
    payload               MEDIUMBLOB NOT NULL,
    return_payload        MEDIUMBLOB,
    error_message         MEDIUMTEXT,
    already_retried_times BIGINT NOT NULL,
    destination_status    TEXT,
    instance_id           VARCHAR(255),
    created_ms            BIGINT NOT NULL,        -- epoch ms; listing order and time filter
    started_ms            BIGINT,
    end_ms                BIGINT,
    events                MEDIUMTEXT NOT NULL,    -- JSON array of {eventId, status, timestamp, eventDetail}
    PRIMARY KEY (function_name, task_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
-- ListAsyncTasks pages by (created_ms, task_id) within a function.
CREATE INDEX async_tasks_by_time ON async_tasks (function_name, created_ms, task_id);
-- Counting by status, and finding tasks in a given status (e.g. left Running by a crash).
CREATE INDEX async_tasks_by_status ON async_tasks (status, function_name);
