"""``cic-health``: judge nodes and keep the replica table the gateway routes on."""

from __future__ import annotations

from cic_common.service import run_service

from cic_health.bootstrap import run
from cic_health.settings import HealthSettings


def main() -> None:
    settings = HealthSettings()
    run_service("health", settings, lambda: run(settings))


if __name__ == "__main__":
    main()
