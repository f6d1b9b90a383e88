"""``cic-reconciler``: take down orphans, mark ghosts lost."""

from __future__ import annotations

from cic_common.service import run_service

from cic_reconciler.bootstrap import run
from cic_reconciler.settings import ReconcilerSettings


def main() -> None:
    settings = ReconcilerSettings()
    run_service("reconciler", settings, lambda: run(settings))


if __name__ == "__main__":
    main()
