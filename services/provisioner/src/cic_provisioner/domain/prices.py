"""Hourly prices from SkyPilot catalogs, and the cheapest places to run a GPU shape."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["CatalogRow", "PriceOption", "parse_catalog", "rank_options"]


@dataclass(frozen=True)
class CatalogRow:
    cloud: str
    instance_type: str
    gpu: str
    gpu_count: float
    region: str
    zone: str | None
    on_demand: float | None
    spot: float | None


@dataclass(frozen=True)
class PriceOption:
    cloud: str
    region: str
    zone: str | None
    instance_type: str
    on_demand: float | None
    spot: float | None

    def price(self, spot: bool) -> float | None:
        return self.spot if spot else self.on_demand


def _money(value: str | None) -> float | None:
    try:
        price = float(value) if value else None
    except ValueError:
        return None
    return price if price is not None and price > 0 else None


def parse_catalog(cloud: str, text: str) -> list[CatalogRow]:
    """Rows of a SkyPilot ``vms.csv``, read by column name (clouds order columns
    differently; AWS and GCP add ``AvailabilityZone``). CPU-only rows are skipped."""
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        gpu = (record.get("AcceleratorName") or "").strip()
        count = (record.get("AcceleratorCount") or "").strip()
        if not gpu or not count:
            continue
        rows.append(
            CatalogRow(
                cloud=cloud,
                instance_type=(record.get("InstanceType") or "").strip(),
                gpu=gpu,
                gpu_count=float(count),
                region=(record.get("Region") or "").strip(),
                zone=(record.get("AvailabilityZone") or "").strip() or None,
                on_demand=_money(record.get("Price")),
                spot=_money(record.get("SpotPrice")),
            )
        )
    return rows


def rank_options(
    rows: Iterable[CatalogRow],
    gpu: str,
    count: int,
    *,
    spot: bool,
    region_preference: Sequence[str] = (),
) -> list[PriceOption]:
    """Every place selling ``count`` of ``gpu`` at the asked market, cheapest first;
    equal prices go to the preferred regions, in order. Places without a price for
    that market are left out."""
    wanted = gpu.lower()
    options = {
        PriceOption(r.cloud, r.region, r.zone, r.instance_type, r.on_demand, r.spot)
        for r in rows
        if r.gpu.lower() == wanted and r.gpu_count == count
    }
    priced = [o for o in options if o.price(spot) is not None]
    preference = {region: i for i, region in enumerate(region_preference)}

    def key(option: PriceOption) -> tuple[float, int, str, str, str]:
        price = option.price(spot)
        assert price is not None
        rank = preference.get(option.region, len(preference))
        return (price, rank, option.cloud, option.region, option.zone or "")

    return sorted(priced, key=key)
