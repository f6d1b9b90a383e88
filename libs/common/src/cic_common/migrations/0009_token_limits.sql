-- Per-key token rate limit (prompt plus completion tokens per minute; NULL: none).
ALTER TABLE api_keys
    ADD COLUMN tpm_limit integer CHECK (tpm_limit > 0);
