"""The SkyPilot configuration we ship is valid by SkyPilot's own schema."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml
from sky.utils import schemas

CONFIG = Path(__file__).parents[3] / "deploy" / "skypilot" / "config.yaml"


def test_the_shipped_config_keeps_skypilot_state_in_postgresql() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jsonschema.validate(config, schemas.get_config_schema())  # type: ignore[no-untyped-call]
    assert config["db"].startswith("postgresql://")
    assert config["api_server"]["endpoint"].startswith("http")
