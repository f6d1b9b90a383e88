-- Targets of the request-rate and latency autoscalers (gateway writes, scheduler reads).
ALTER TABLE deployments
    ADD COLUMN target_rps real NOT NULL DEFAULT 5 CHECK (target_rps > 0),
    ADD COLUMN target_p95 real NOT NULL DEFAULT 10 CHECK (target_p95 > 0);
