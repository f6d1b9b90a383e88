"""``cic-scheduler``: hold every deployment at its replica count."""

from __future__ import annotations

from cic_common.service import run_service

from cic_scheduler.bootstrap import run
from cic_scheduler.settings import SchedulerSettings


def main() -> None:
    settings = SchedulerSettings()
    run_service("scheduler", settings, lambda: run(settings))


if __name__ == "__main__":
    main()
