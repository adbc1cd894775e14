-- Per-key ordering of async invocations (x-nubis-ordering-key; docs/architecture.md "Ordering
-- keys"). Events of one function with the same key run one at a time, in accept order.

-- The key an event was accepted with (NULL: none), shown as `orderingKey` on the task.
ALTER TABLE async_tasks ADD COLUMN ordering_key TEXT;

-- The embedded queue's ordering groups (queue::embedded): a message of a group is visible only
-- while it is the oldest message of its group (its head); the others wait with visible_at_ms
-- at i64::MAX ("parked") until the head is acked, which makes the next one visible. NULL: no
-- group, the message is independent.
ALTER TABLE queue_messages ADD COLUMN order_group TEXT;
-- Enqueue asks "does the group have a message?", ack "which is the group's next?".
CREATE INDEX queue_messages_by_group ON queue_messages (order_group, id) WHERE order_group IS NOT NULL;
