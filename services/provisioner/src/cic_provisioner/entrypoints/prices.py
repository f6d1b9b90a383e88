"""Answering price requests: the cheapest places for a GPU shape, from the catalogs."""

from __future__ import annotations

import json
import logging

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cic_provisioner.adapters.catalog import CatalogDirectory
from cic_provisioner.domain.prices import rank_options

__all__ = ["PriceQuery", "PriceResponder"]

log = logging.getLogger(__name__)


class PriceQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpu: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    count: int = Field(1, ge=1, le=64)
    spot: bool = False
    region_preference: list[str] = Field(default_factory=list, max_length=32)
    limit: int = Field(20, ge=1, le=500)


class PriceResponder:
    """Core NATS request/reply on ``cic.prices.request``: a ``PriceQuery`` in, JSON
    ``{"options": [...]}`` or ``{"error": "..."}`` out; never an unanswered request."""

    def __init__(self, catalogs: CatalogDirectory) -> None:
        self._catalogs = catalogs

    def answer(self, raw: bytes) -> dict[str, object]:
        try:
            query = PriceQuery.model_validate_json(raw)
        except ValidationError as exc:
            return {"error": "; ".join(f"{e['loc']}: {e['msg']}" for e in exc.errors())}
        ranked = rank_options(self._catalogs.rows(), query.gpu, query.count, spot=query.spot,
                              region_preference=query.region_preference)  # fmt: skip
        return {
            "clouds": self._catalogs.clouds(),
            "options": [
                {
                    "cloud": o.cloud,
                    "region": o.region,
                    "zone": o.zone,
                    "instance_type": o.instance_type,
                    "on_demand_per_hour": o.on_demand,
                    "spot_per_hour": o.spot,
                }
                for o in ranked[: query.limit]
            ],
        }

    async def on_request(self, msg: Msg) -> None:
        try:
            body = self.answer(msg.data)
        except Exception as exc:  # a broken catalog file must not leave callers hanging
            log.exception("price request failed")
            body = {"error": f"{type(exc).__name__}: {exc}"}
        await msg.respond(json.dumps(body).encode())
