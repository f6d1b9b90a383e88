-- Autoscaling: the operator sets the bounds and the policy (gateway writes); the
-- scheduler alone writes the count it holds and its memory of the last proposal.
ALTER TABLE deployments
    ADD COLUMN autoscaler text NOT NULL DEFAULT 'none',
    ADD COLUMN min_replicas integer CHECK (min_replicas >= 0),
    ADD COLUMN max_replicas integer CHECK (max_replicas >= 0),
    ADD COLUMN target_in_flight real NOT NULL DEFAULT 8 CHECK (target_in_flight > 0),
    ADD COLUMN autoscaled_replicas integer,
    ADD COLUMN autoscale_proposal jsonb;
