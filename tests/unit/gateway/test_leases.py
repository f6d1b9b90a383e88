"""Admission leases: their sizes follow use within a share of the limit, and a lease
admits only what it holds, for the limits it was taken under, until it expires."""

from __future__ import annotations

import pytest
from cic_gateway.domain.leases import Lease, Refusal, leasable, lease_size, next_sizes


@pytest.mark.parametrize(
    ("limit", "need", "served_before", "size"),
    [
        (None, 1, 50, 0),  # no limit: nothing to take
        (0, 1, 50, 0),
        (30, 1, 10, 1),  # a small limit: one request at a time, the plain shared count
        (199, 1, 10, 1),
        (10_000, 1, 0, 1),  # a first lease: what the request needs
        (10_000, 1, 7, 14),  # twice what the last one served
        (10_000, 1, 400, 50),  # at most 0.5% of the limit
        (1000, 60, 40, 60),  # never less than the request needs
        (100_000, 60, 200, 400),
    ],
)
def test_a_lease_is_twice_what_the_last_served_within_half_a_percent_of_the_limit(
    limit: int | None, need: int, served_before: int, size: int
) -> None:
    assert lease_size(limit, need, served_before) == size


def lease(
    requests: int = 3, tokens: int = 100, rpm: int | None = 600, tpm: int | None = None
) -> Lease:
    return Lease(rpm, tpm, window=7, expires=10.0, requests=requests, tokens=tokens)


def test_a_lease_admits_the_requests_it_holds_and_then_no_more() -> None:
    held = lease(requests=2)
    assert held.take(600, None, 0, now=1.0)
    assert held.take(600, None, 0, now=2.0)
    assert not held.take(600, None, 0, now=3.0)
    assert (held.requests, held.served_requests) == (0, 2)


def test_a_lease_admits_a_request_only_when_its_tokens_fit() -> None:
    held = lease(tokens=100, rpm=None, tpm=20_000)
    assert held.take(None, 20_000, 60, now=1.0)
    assert not held.take(None, 20_000, 60, now=1.0)  # 40 left: nothing taken
    assert (held.tokens, held.served_tokens) == (40, 60)
    assert held.take(None, 20_000, 40, now=1.0)


def test_a_request_under_both_limits_needs_a_request_and_its_tokens() -> None:
    held = lease(requests=1, tokens=100, rpm=600, tpm=20_000)
    assert not held.take(600, 20_000, 150, now=1.0)
    assert held.requests == 1  # nothing taken when one of the two does not fit
    assert held.take(600, 20_000, 50, now=1.0)
    assert not held.take(600, 20_000, 50, now=1.0)  # tokens left, no request left


def test_an_expired_lease_admits_nothing() -> None:
    held = lease()
    assert not held.take(600, None, 0, now=10.0)
    assert held.requests == 3


def test_a_lease_taken_under_other_limits_admits_nothing() -> None:
    held = lease(rpm=600)
    assert not held.take(1200, None, 0, now=1.0)  # the key's limit was changed
    assert not held.take(600, 5000, 10, now=1.0)  # a token limit was added
    assert held.requests == 3


def test_the_next_lease_follows_what_the_last_served_under_the_same_limits() -> None:
    assert next_sizes(None, 100_000, 200_000, 60) == (1, 60)  # the key's first
    busy = lease(requests=0, rpm=100_000, tpm=200_000)
    busy.served_requests, busy.served_tokens = 40, 2400
    assert next_sizes(busy, 100_000, 200_000, 60) == (80, 1000)  # tokens: at most 0.5%
    assert next_sizes(busy, 50_000, 200_000, 60) == (1, 60)  # other limits: start again


@pytest.mark.parametrize(
    ("rpm", "tpm", "reserve", "now", "holds"),
    [
        (600, 5000, 100, 1.0, True),  # the same request again, soon after
        (600, 5000, 400, 1.0, True),  # a larger one
        (600, 5000, 50, 1.0, False),  # a smaller one may fit: ask the shared count
        (600, 5000, 100, 2.0, False),  # the moment is over
        (1200, 5000, 100, 1.0, False),  # the key's limits were changed
        (600, None, 100, 1.0, False),
    ],
)
def test_a_refusal_holds_for_a_moment_for_requests_as_large_under_the_same_limits(
    rpm: int | None, tpm: int | None, reserve: int, now: float, holds: bool
) -> None:
    refusal = Refusal(rpm=600, tpm=5000, reserve=100, until=2.0, wait=12.0)
    assert refusal.holds(rpm, tpm, reserve, now) is holds


@pytest.mark.parametrize(
    ("rpm", "tpm", "reserve", "expected"),
    [
        (399, None, 0, False),  # 0.5% of it is one request: each takes its own
        (400, None, 0, True),
        (None, 100_000, 500, False),  # 0.5% is 500 tokens: one request's reserve
        (None, 100_000, 400, True),
        (399, 100_000, 400, True),  # the tokens can be shared, so the requests wait
        (None, None, 0, False),
    ],
)
def test_a_key_is_leased_only_when_a_lease_could_hold_more_than_one_request(
    rpm: int | None, tpm: int | None, reserve: int, expected: bool
) -> None:
    assert leasable(rpm, tpm, reserve) is expected
