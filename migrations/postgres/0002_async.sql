-- PostgreSQL twin of migrations/sqlite/0002_async.sql: async invoke configs and task records.
-- The embedded queue's table (queue_messages) is SQLite-only: with PostgreSQL the async queue
-- is Kafka (see queue::embedded).

-- PutAsyncInvokeConfig, one row per (function, qualifier).
CREATE TABLE async_invoke_configs (
    function_name      TEXT COLLATE "C" NOT NULL,
    qualifier          TEXT COLLATE "C" NOT NULL,
    config             TEXT NOT NULL,      -- JSON of model::async_task::AsyncConfig
    created_time       TEXT NOT NULL,
    last_modified_time TEXT NOT NULL,
    PRIMARY KEY (function_name, qualifier)
);

-- One row per async invocation; the truth for its status (the queue message only points here).
CREATE TABLE async_tasks (
    function_name         TEXT COLLATE "C" NOT NULL,
    task_id               TEXT COLLATE "C" NOT NULL,
    qualifier             TEXT NOT NULL,
    request_id            TEXT NOT NULL,
    status                TEXT NOT NULL,     -- model::async_task::TaskStatus name
    payload               BYTEA NOT NULL,
    return_payload        BYTEA,
    error_message         TEXT,
    already_retried_times BIGINT NOT NULL,
    destination_status    TEXT,
    instance_id           TEXT,
    created_ms            BIGINT NOT NULL,   -- epoch ms; listing order and time filter
    started_ms            BIGINT,
    end_ms                BIGINT,
    events                TEXT NOT NULL,     -- JSON array of {eventId, status, timestamp, eventDetail}
    PRIMARY KEY (function_name, task_id)
);
-- ListAsyncTasks pages by (created_ms, task_id) within a function.
CREATE INDEX async_tasks_by_time ON async_tasks (function_name, created_ms, task_id);
-- Counting by status, and finding tasks in a given status (e.g. left Running by a crash).
CREATE INDEX async_tasks_by_status ON async_tasks (status, function_name);
