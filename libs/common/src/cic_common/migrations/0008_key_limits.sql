-- Per-key request rate limit (requests per minute; NULL: none), enforced by the gateway.
ALTER TABLE api_keys
    ADD COLUMN rpm_limit integer CHECK (rpm_limit > 0);
