-- Where a deployment's nodes may run, how big their disks are, and what to do when spot
-- capacity runs out.
ALTER TABLE deployments
    ADD COLUMN infra text,
    ADD COLUMN disk_size integer CHECK (disk_size > 0),
    ADD COLUMN disk_tier text,
    ADD COLUMN params_billion real CHECK (params_billion > 0),
    ADD COLUMN spot_fallback boolean NOT NULL DEFAULT false;
