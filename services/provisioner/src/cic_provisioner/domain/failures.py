"""Why a launch failed, in classes the scheduler can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["FailureClass", "LaunchFailure", "classify"]

FailureClass = Literal[
    "quota", "auth", "no_capacity", "bad_spec", "timeout", "unreachable", "internal"
]

_BY_TYPE: dict[str, FailureClass] = {
    "ResourcesUnavailableError": "no_capacity",
    "ResourcesMismatchError": "bad_spec",
    "InvalidSkyPilotConfigError": "bad_spec",
    "InvalidClusterNameError": "bad_spec",
    "NotSupportedError": "bad_spec",
    "BadSpec": "bad_spec",
    "ValueError": "bad_spec",
    "NoCloudAccessError": "auth",
    "CloudUserIdentityError": "auth",
    "PermissionDeniedError": "auth",
    "ApiServerAuthenticationError": "auth",
    "TimeoutError": "timeout",
    "ApiServerConnectionError": "unreachable",
    "NetworkError": "unreachable",
}
_BY_WORDS: tuple[tuple[tuple[str, ...], FailureClass], ...] = (
    (("quota", "limitexceeded", "vcpulimit"), "quota"),
    (("credential", "unauthorized", "permission", "access denied", "not authorized"), "auth"),
    (("capacity", "insufficientinstancecapacity", "zone_resource_pool_exhausted"),
     "no_capacity"),
    (("connectionerror", "name or service not known", "failed to resolve", "timed out",
      "api server"), "unreachable"),
)  # fmt: skip
_RETRYABLE: frozenset[FailureClass] = frozenset({"no_capacity", "timeout", "unreachable"})


@dataclass(frozen=True)
class LaunchFailure:
    reason_class: FailureClass
    reason: str
    retryable: bool


def classify(error_type: str, message: str) -> LaunchFailure:
    """The class of a backend error, from its type name and then its message.

    Quota beats no-capacity: clouds report an exhausted quota as "insufficient
    capacity" too, and retrying elsewhere does not lift a quota.
    """
    lowered = message.lower()
    found: FailureClass = _BY_TYPE.get(error_type, "internal")
    for words, kind in _BY_WORDS:
        if any(w in lowered for w in words) and found in ("internal", "no_capacity"):
            if kind == "quota" or found == "internal":
                found = kind
            break
    brief = " ".join(message.split())[:500] or error_type
    return LaunchFailure(found, f"{error_type}: {brief}", found in _RETRYABLE)
