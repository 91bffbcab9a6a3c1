-- Leases name their owner: a runner only ever renews or settles what it still holds, so a job
-- reclaimed after its lease ran out cannot be overwritten by the runner that lost it.
ALTER TABLE jobs ADD COLUMN locked_by TEXT;
ALTER TABLE webhook_outbox ADD COLUMN locked_by TEXT;
