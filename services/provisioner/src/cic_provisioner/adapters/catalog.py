"""SkyPilot catalogs on disk (``~/.sky/catalogs/v8/<cloud>/vms.csv``), as SkyPilot keeps them."""

from __future__ import annotations

from pathlib import Path

from cic_provisioner.domain.prices import CatalogRow, parse_catalog

__all__ = ["DEFAULT_CATALOG_DIR", "CatalogDirectory"]

DEFAULT_CATALOG_DIR = Path("~/.sky/catalogs/v8")


class CatalogDirectory:
    """Every cloud's ``vms.csv`` under one directory, read once per file change."""

    def __init__(self, root: Path = DEFAULT_CATALOG_DIR) -> None:
        self._root = root.expanduser()
        self._cache: dict[Path, tuple[float, list[CatalogRow]]] = {}

    def clouds(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(p.parent.name for p in self._root.glob("*/vms.csv"))

    def rows(self) -> list[CatalogRow]:
        found: list[CatalogRow] = []
        for cloud in self.clouds():
            path = self._root / cloud / "vms.csv"
            mtime = path.stat().st_mtime
            cached = self._cache.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, parse_catalog(cloud, path.read_text()))
                self._cache[path] = cached
            found += cached[1]
        return found
