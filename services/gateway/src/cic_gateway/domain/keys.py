"""API keys: their format, generation and hashing. Only hashes are ever stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["ParsedKey", "generate_key", "hash_secret", "parse_key", "secret_matches"]

_SCHEME = "cic"


@dataclass(frozen=True)
class ParsedKey:
    """``cic-<prefix>-<secret>``: the prefix is public and finds the record."""

    prefix: str
    secret: str


def generate_key() -> tuple[str, ParsedKey]:
    """A new key: the full string (shown once) and its parts."""
    parsed = ParsedKey(prefix=secrets.token_hex(6), secret=secrets.token_urlsafe(32))
    return f"{_SCHEME}-{parsed.prefix}-{parsed.secret}", parsed


def parse_key(raw: str) -> ParsedKey | None:
    """The parts of a presented key, or None when it is not of our format."""
    scheme, _, rest = raw.partition("-")
    prefix, _, secret = rest.partition("-")
    if scheme != _SCHEME or len(prefix) != 12 or len(secret) < 16 or len(raw) > 200:
        return None
    if not all(c in "0123456789abcdef" for c in prefix):
        return None
    return ParsedKey(prefix=prefix, secret=secret)


def hash_secret(secret: str) -> bytes:
    """SHA-256 of the secret: keys carry 256 bits of entropy, so a slow hash buys nothing."""
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
