-- Tenants: every deployment and every user key belongs to one; an admin key with a tenant
-- manages that tenant's deployments, keys and usage only, and one without (an operator's)
-- manages everything. A model is served to one tenant: its live deployments share it.
ALTER TABLE deployments
    ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE api_keys
    ADD COLUMN tenant text;
UPDATE api_keys SET tenant = 'default' WHERE scope <> 'admin';
-- A key written by a gateway that predates tenants (a rolling upgrade) is the default
-- tenant's: an admin key so made is that tenant's admin, never an operator's.
ALTER TABLE api_keys
    ALTER COLUMN tenant SET DEFAULT 'default';
ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_user_has_tenant CHECK (scope = 'admin' OR tenant IS NOT NULL);
CREATE INDEX deployments_model_live ON deployments (model) WHERE deleted_at IS NULL;
CREATE INDEX api_keys_tenant ON api_keys (tenant);
