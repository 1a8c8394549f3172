"""The predictor registry: made once by `create_app`, one per app, and handed to routes by `RegistryDep`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.predictors.deps import RegistryDep
from service.predictors.registry import PredictorRegistry
from service.settings import Settings


def test_each_app_makes_its_own_registry(settings: Settings) -> None:
    first, second = create_app(settings), create_app(settings)
    try:
        assert isinstance(first.state.predictor_registry, PredictorRegistry)
        assert isinstance(second.state.predictor_registry, PredictorRegistry)
        # Apps on other databases must never share loaded models.
        assert first.state.predictor_registry is not second.state.predictor_registry
        assert first.state.predictor_registry.refresh_s == settings.predictor_refresh_ms / 1000.0
    finally:
        first.state.engine.dispose()
        second.state.engine.dispose()


def test_routes_receive_the_registry_the_app_made(app: FastAPI) -> None:
    made = app.state.predictor_registry
    seen: list[PredictorRegistry] = []

    @app.get("/test/registry")
    def read_registry(registry: RegistryDep) -> None:
        seen.append(registry)

    with TestClient(app) as client:
        assert client.get("/test/registry").status_code == 200
        assert client.get("/test/registry").status_code == 200
    assert len(seen) == 2
    assert all(registry is made for registry in seen)
    assert app.state.predictor_registry is made  # never replaced on first use
