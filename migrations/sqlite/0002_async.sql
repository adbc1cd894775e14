-- Asynchronous invocation: per function+qualifier config, the durable task records, and the
-- embedded queue that carries task keys to the dispatcher.

-- PutAsyncInvokeConfig, one row per (function, qualifier).
CREATE TABLE async_invoke_configs (
    function_name      TEXT NOT NULL,
    qualifier          TEXT NOT NULL,
    config             TEXT NOT NULL,      -- JSON of model::async_task::AsyncConfig
    created_time       TEXT NOT NULL,
    last_modified_time TEXT NOT NULL,
    PRIMARY KEY (function_name, qualifier)
);

-- One row per async invocation; the truth for its status (the queue message only points here).
CREATE TABLE async_tasks (
    function_name         TEXT NOT NULL,
    task_id               TEXT NOT NULL,
    qualifier             TEXT NOT NULL,
    request_id            TEXT NOT NULL,
    status                TEXT NOT NULL,     -- model::async_task::TaskStatus name
    payload               BLOB NOT NULL,
    return_payload        BLOB,
    error_message         TEXT,
    already_retried_times INTEGER NOT NULL,
    destination_status    TEXT,
    instance_id           TEXT,
    created_ms            INTEGER NOT NULL,  -- epoch ms; listing order and time filter
    started_ms            INTEGER,
    end_ms                INTEGER,
    events                TEXT NOT NULL,     -- JSON array of {eventId, status, timestamp, eventDetail}
    PRIMARY KEY (function_name, task_id)
);
-- ListAsyncTasks pages by (created_ms, task_id) within a function.
CREATE INDEX async_tasks_by_time ON async_tasks (function_name, created_ms, task_id);
-- Counting by status, and finding tasks in a given status (e.g. left Running by a crash).
CREATE INDEX async_tasks_by_status ON async_tasks (status, function_name);

-- The embedded queue (queue::embedded). A message is visible when visible_at_ms <= now; a
-- receive leases it by pushing visible_at_ms out and stamping a fresh lease_token, so an
-- expired lease makes it visible again without any sweeper. AUTOINCREMENT: ids are never
-- reused, so an old delivery id can never name a newer message.
CREATE TABLE queue_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_key       TEXT NOT NULL,
    body          BLOB NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    deliveries    INTEGER NOT NULL DEFAULT 0,
    lease_token   TEXT,
    enqueued_ms   INTEGER NOT NULL
);
-- Receive walks the keys, asks each "anything visible?" (by_key_visibility) and takes its oldest
-- visible messages in id order (by_key_id); see queue::embedded for the plan.
CREATE INDEX queue_messages_by_key_id ON queue_messages (msg_key, id, visible_at_ms);
CREATE INDEX queue_messages_by_key_visibility ON queue_messages (msg_key, visible_at_ms);
