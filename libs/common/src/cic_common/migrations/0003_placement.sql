-- Where and on which market a deployment's nodes run, and how big their disks are.
ALTER TABLE deployments
    DROP COLUMN use_spot,
    ADD COLUMN spot_policy text NOT NULL DEFAULT 'on_demand'
        CHECK (spot_policy IN ('on_demand', 'spot_only', 'spot_with_fallback')),
    ADD COLUMN placement text NOT NULL DEFAULT 'spread' CHECK (placement IN ('spread', 'packed')),
    ADD COLUMN locations text[] NOT NULL DEFAULT '{}',
    ADD COLUMN spot_spares integer NOT NULL DEFAULT 1 CHECK (spot_spares >= 0),
    ADD COLUMN disk_size integer CHECK (disk_size > 0),
    ADD COLUMN disk_tier text,
    ADD COLUMN params_billion real CHECK (params_billion > 0);
