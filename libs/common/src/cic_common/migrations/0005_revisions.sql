-- A deployment's revision changes only when what its nodes run changes (model, engine
-- arguments, GPUs, context length); nodes.generation records the revision each node runs,
-- and outdated nodes are replaced one at a time.
ALTER TABLE deployments ADD COLUMN revision bigint NOT NULL DEFAULT 1;
