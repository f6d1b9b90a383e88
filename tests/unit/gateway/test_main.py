"""The gateway's process entry: each worker's app, built from the environment, with the
heap it loaded kept out of the garbage collector's scans."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest
from cic_gateway.__main__ import app_from_env
from fastapi import FastAPI


@pytest.fixture
def root_logger_kept() -> Iterator[None]:
    """A worker sets up the root logger for its process: this one's is put back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logger_kept")
def test_a_worker_builds_its_app_and_freezes_what_it_loaded() -> None:
    gc.unfreeze()
    try:
        app = app_from_env()
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()  # the test process's own heap stays collectable
    assert isinstance(app, FastAPI)
    assert "/v1/chat/completions" in app.openapi()["paths"]
    assert frozen > 10_000  # modules, routes and schemas: most of what a worker holds
