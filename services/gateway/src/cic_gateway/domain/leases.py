"""Admission leases: a share of a key's rate limit taken from the shared count at once,
so that a busy key's requests are admitted locally instead of one Redis call each.

A lease is counted in the shared window the moment it is granted, so instances together
never admit past the limit; what a lease leaves unused is given back when the next one
is taken. Its size follows use (twice what the last lease served, like a congestion
window) and is capped at a small share of the limit, which bounds what leases can hold
back from other instances: with the default share of 0.5%, three instances together
hold back at most 1.5% of a key's limit. A key whose limit is under 400 a minute gets
leases of exactly one request, which is the plain shared count.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LEASE_SHARE", "Lease", "Refusal", "leasable", "lease_size", "next_sizes"]

LEASE_SHARE = 0.005
"""The most of a key's limit one lease may take."""


def lease_size(limit: int | None, need: int, served_before: int, share: float = LEASE_SHARE) -> int:
    """How much of ``limit`` (requests or tokens a window; None or 0: unlimited, so
    nothing to take) to ask for: at least ``need``, what the request at hand takes; up
    to twice ``served_before``, what the last lease served; at most ``share`` of it."""
    if not limit:
        return 0
    return max(need, min(int(limit * share), 2 * served_before))


def leasable(rpm: int | None, tpm: int | None, reserve: int, share: float = LEASE_SHARE) -> bool:
    """Whether a lease under ``rpm`` and ``tpm`` could ever hold more than one request
    reserving ``reserve`` tokens (else each request takes its own, and has no reason to
    wait for another's)."""
    return bool(rpm and int(rpm * share) > 1) or bool(tpm and int(tpm * share) > reserve)


@dataclass
class Lease:
    """What is left of a lease of one key's allowance, valid until ``expires`` and for
    the limits it was taken under only."""

    rpm: int | None
    tpm: int | None
    window: int
    """The shared window it was counted in."""
    expires: float
    requests: int
    """Requests left."""
    tokens: int
    """Tokens left."""
    served_requests: int = 0
    served_tokens: int = 0

    def take(self, rpm: int | None, tpm: int | None, reserve: int, now: float) -> bool:
        """Admit one request reserving ``reserve`` tokens, under limits ``rpm`` and
        ``tpm``, from what is left; False (and nothing taken) when it does not fit, has
        expired or was taken under other limits."""
        if now >= self.expires or rpm != self.rpm or tpm != self.tpm:
            return False
        if (rpm and self.requests < 1) or (tpm and self.tokens < reserve):
            return False
        if rpm:
            self.requests -= 1
            self.served_requests += 1
        if tpm:
            self.tokens -= reserve
            self.served_tokens += reserve
        return True


@dataclass(frozen=True)
class Refusal:
    """A key's request refused by the shared count, remembered for a moment so that a
    client past its limit does not make every one of its requests a round trip."""

    rpm: int | None
    tpm: int | None
    reserve: int
    until: float
    wait: float
    """What the refusal said to wait, in seconds."""

    def holds(self, rpm: int | None, tpm: int | None, reserve: int, now: float) -> bool:
        """Whether a request reserving ``reserve`` tokens under ``rpm`` and ``tpm`` is
        refused as well: it comes before ``until``, under the same limits, and needs as
        much as the refused one at least."""
        return now < self.until and (rpm, tpm) == (self.rpm, self.tpm) and reserve >= self.reserve


def next_sizes(
    previous: Lease | None, rpm: int | None, tpm: int | None, reserve: int
) -> tuple[int, int]:
    """The sizes, in requests and in tokens, of the lease to take for a request reserving
    ``reserve`` tokens under ``rpm`` and ``tpm`` after ``previous`` (None: the key's
    first); a lease taken under other limits says nothing about how the key is used."""
    same = previous is not None and rpm == previous.rpm and tpm == previous.tpm
    return (
        lease_size(rpm, 1, previous.served_requests if same and previous else 0),
        lease_size(tpm, reserve, previous.served_tokens if same and previous else 0),
    )
