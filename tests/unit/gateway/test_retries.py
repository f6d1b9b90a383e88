"""The retry budget: a pure policy."""

from __future__ import annotations

from cic_gateway.domain.retry_budget import RetryBudget


def test_retries_are_a_share_of_requests_over_the_window_plus_a_floor() -> None:
    budget = RetryBudget(ratio=0.2, floor=0.5, window=10)
    for _ in range(100):
        budget.requested(now=1000.0)
    granted = sum(budget.may_retry(now=1000.5) for _ in range(100))
    assert granted == 25  # 20 % of 100 requests, plus 0.5/s over 10 s


def test_the_budget_refills_as_old_requests_leave_the_window() -> None:
    budget = RetryBudget(ratio=0.0, floor=0.1, window=10)
    assert budget.may_retry(now=0.0)
    assert not budget.may_retry(now=5.0)  # one retry per 10 s
    assert budget.may_retry(now=10.0)  # the first one left the window
