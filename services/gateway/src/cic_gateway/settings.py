"""Gateway settings (``CIC_*`` environment variables)."""

from __future__ import annotations

from cic_common.settings import CommonSettings
from pydantic import Field

__all__ = ["GatewaySettings"]


class GatewaySettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = 8080
    admin_key: str | None = Field(
        None, description="bootstrap admin key (cic-<prefix>-<secret>); stored hashed at start"
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, description="larger requests get 413")
    upstream_timeout: float = Field(
        600.0, description="seconds for one upstream request, a whole stream included"
    )
    max_tokens: int = Field(32768, ge=1, description="largest max_tokens a request may ask")
    max_n: int = Field(16, ge=1, description="most choices (n) a request may ask")
    upstream_connect_timeout: float = 2.0
    max_attempts: int = Field(3, ge=1, description="replicas tried per request")
    retry_ratio: float = Field(
        0.2, ge=0, description="retries allowed as a share of requests (plus 5/s)"
    )
    table_refresh: float = Field(
        1.0, gt=0, description="seconds between reads of the replica table (and on change)"
    )
    eject_for: float = Field(10.0, ge=0, description="seconds a failing replica is skipped")
    key_cache_seconds: float = Field(1.0, description="how long a key lookup is reused")
