-- PostgreSQL twin of migrations/sqlite/0005_ordering.sql: the ordering key an async task was
-- accepted with (NULL: none). The queue side is Kafka's (message keys), not a table.
ALTER TABLE async_tasks ADD COLUMN ordering_key TEXT;
