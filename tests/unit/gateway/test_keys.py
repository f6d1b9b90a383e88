"""API key handling: pure functions."""

from __future__ import annotations

from cic_gateway.domain.keys import generate_key, hash_secret, parse_key, secret_matches


def test_a_generated_key_parses_and_matches_only_its_own_hash() -> None:
    full, parsed = generate_key()
    again = parse_key(full)
    assert again == parsed
    assert secret_matches(parsed.secret, hash_secret(parsed.secret))
    assert not secret_matches(parsed.secret + "x", hash_secret(parsed.secret))


def test_malformed_keys_are_refused_before_any_lookup() -> None:
    for raw in ("", "sk-abc", "cic-XYZXYZXYZXYZ-" + "s" * 20, "cic-0123456789ab-short", "x" * 300):
        assert parse_key(raw) is None
