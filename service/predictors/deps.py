"""The predictor registry as a route dependency (`RegistryDep`).

`create_app` makes one `PredictorRegistry` per app (apps on other databases never share loaded models) and
keeps it on `app.state`; routes receive it through `RegistryDep`, the predict fast path through
`registry_of`. Nothing here builds a registry: that is the app's job, done once at start-up.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.predictors.registry import PredictorRegistry


def registry_of(request: Request) -> PredictorRegistry:
    """The registry `create_app` made for the app serving `request`."""
    registry: PredictorRegistry = request.app.state.predictor_registry
    return registry


async def get_registry(request: Request) -> PredictorRegistry:
    """The app's predictor cache.

    Async so FastAPI resolves it on the loop rather than in a worker thread (a thread hop per request).
    """
    return registry_of(request)


RegistryDep = Annotated[PredictorRegistry, Depends(get_registry)]
