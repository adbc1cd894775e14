-- MySQL/MariaDB twin of migrations/sqlite/0007_timer_ticks.sql: the last tick of a timer trigger.
ALTER TABLE triggers ADD COLUMN timer_last_tick_ms BIGINT NULL;
