"""`create_app(settings)`: routers, error handlers and middleware — nothing else."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import operations
from service.campaigns.routes import router as campaigns_router
from service.dashboard.routes import router as dashboard_router
from service.db import make_engine, make_sessionmaker
from service.deps import document_bearer_auth
from service.devices.routes import router as devices_router
from service.jobs.routes import router as jobs_router
from service.measurements.routes import router as measurements_router
from service.predictors.fast_path import PredictFastPath
from service.predictors.features import configure_cache
from service.predictors.inference import prepare_serving
from service.predictors.registry import PredictorRegistry
from service.predictors.routes import PREDICT_PATH
from service.predictors.routes import router as predictors_router
from service.predictors.trainer import Trainer
from service.problems import BodySizeLimit, document_problems, install_handlers
from service.settings import Settings, get_settings


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """The latfarm API for `settings` (default: from the environment), on its own engine and metrics.

    `freeze_heap` (what `latfarm serve` asks for; a process that serves one app for its lifetime): once
    started, the objects alive then — modules, the ORM, numba and llvmlite, ~265,000 of them — move out
    of the garbage collector's sight (`gc.freeze`). Each full collection walked them all: ~160 ms once in
    every ~100 cold 1,000-config requests, a millisecond a request on average and a spike in the tail.
    """
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper())
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)
    # Queued trainings (including any a killed process left) are claimed by this process's trainer.
    trainer = Trainer(factory, settings) if settings.train_in_api else None
    configure_cache(settings.feature_cache_entries)  # the caches are per process, as is this setting

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        prepare_serving()  # kernels compiled and BLAS held to one thread before the first request
        if trainer is not None:
            trainer.start()
        if freeze_heap:
            gc.collect()  # what is garbage now is freed, not frozen
            gc.freeze()
        yield
        if trainer is not None:
            trainer.stop()
        engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="latfarm",
        version="0.1.0",
        description="Latency-profiling device farm and latency-predictor service",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = factory
    app.state.trainer = trainer
    # One cache of loaded predictors per app, given to routes by `service.predictors.deps.RegistryDep`.
    app.state.predictor_registry = PredictorRegistry(settings.predictor_refresh_ms)
    app.state.metrics = operations.RequestMetrics()

    install_handlers(app)
    app.include_router(operations.router)
    for router in (
        devices_router,
        jobs_router,
        measurements_router,
        predictors_router,
        campaigns_router,
        dashboard_router,
    ):
        app.include_router(router)

    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # Built once (FastAPI caches the document), with the problem+json schema the errors refer to
        # and the bearer token the routes take.
        return app.openapi_schema or document_bearer_auth(document_problems(build_openapi()))

    app.openapi = openapi  # type: ignore[method-assign]
    predict_route = next(r for r in predictors_router.routes if getattr(r, "path", None) == PREDICT_PATH)
    # Innermost: inside the size limit and the metrics.
    app.add_middleware(PredictFastPath, route=predict_route, metrics=app.state.metrics)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(operations.MetricsMiddleware, metrics=app.state.metrics)
    return app
