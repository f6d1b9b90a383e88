"""Gateway settings (``CIC_*`` environment variables)."""

from __future__ import annotations

from typing import Literal

from cic_common.settings import CommonSettings
from pydantic import Field

__all__ = ["GatewaySettings"]


class GatewaySettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = Field(1, ge=1, description="processes serving the port (one per core)")
    admin_key: str | None = Field(
        None, description="bootstrap admin key (cic-<prefix>-<secret>); stored hashed at start"
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, description="larger requests get 413")
    upstream_timeout: float = Field(
        600.0, description="seconds for one upstream request, a whole stream included"
    )
    max_tokens: int = Field(32768, ge=1, description="largest max_tokens a request may ask")
    max_n: int = Field(16, ge=1, description="most choices (n) a request may ask")
    reserve_tokens: int = Field(
        512,
        ge=0,
        description="tokens reserved, per choice, against a key's token limit"
        " for a request that sets no max_tokens (settled when it is done)",
    )
    upstream_connect_timeout: float = 2.0
    max_attempts: int = Field(3, ge=1, description="replicas tried per request")
    retry_ratio: float = Field(
        0.2, ge=0, description="retries allowed as a share of requests (plus 5/s)"
    )
    table_refresh: float = Field(
        1.0, gt=0, description="seconds between reads of the replica table (and on change)"
    )
    eject_for: float = Field(10.0, ge=0, description="seconds a failing replica is skipped")
    gap_wait: float = Field(
        3.0, ge=0, description="seconds a request waits for a model that just lost its last "
        "replica from the table to get one back, before a 503"
    )  # fmt: skip
    probe_after: float = Field(
        2.0, gt=0, description="seconds a request waits for bytes before its replica is probed"
    )
    probe_timeout: float = Field(1.0, gt=0, description="seconds a replica's health check has")
    routing_policy: Literal["least_load", "round_robin", "session", "prefix"] = Field(
        "least_load", description="how a replica is chosen for each request"
    )
    session_header: str = Field(
        "x-session-id", description="the header the session policy keys on (else `user`)"
    )
    prefix_chars: int = Field(
        1024, ge=1, description="leading prompt characters the prefix policy keys on"
    )
    key_cache_seconds: float = Field(1.0, description="how long a key lookup is reused")
