-- Timer triggers (triggers::timer): the last tick each timer trigger fired (or skipped), in
-- milliseconds since the epoch; NULL until its first. It drives catch-up after a restart or a
-- failover (the missed-tick policy) and lives in the trigger's own row, so it goes with the
-- trigger and a trigger created again under the name starts afresh. Only the engine writes it,
-- and only forwards (UPDATE ... WHERE it is lower); UpdateTrigger leaves it alone.
ALTER TABLE triggers ADD COLUMN timer_last_tick_ms INTEGER;
