-- MySQL/MariaDB twin of migrations/sqlite/0005_ordering.sql: the ordering key an async task was
-- accepted with (NULL: none; at most 256 ASCII characters, model::async_task::OrderingKey).
-- The queue side is Kafka's (message keys), not a table.
ALTER TABLE async_tasks ADD COLUMN ordering_key VARCHAR(256) NULL;
