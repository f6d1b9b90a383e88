"""``cic-provisioner``: launch and terminate nodes; the only caller of a compute backend."""

from __future__ import annotations

from cic_common.service import run_service

from cic_provisioner.bootstrap import run
from cic_provisioner.settings import ProvisionerSettings


def main() -> None:
    settings = ProvisionerSettings()
    run_service("provisioner", settings, lambda: run(settings))


if __name__ == "__main__":
    main()
