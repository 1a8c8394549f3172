"""The search-job client: latfarm's HTTP interface v1 as Python calls, blocking (`LatfarmClient`) and asyncio
(`AsyncLatfarmClient`).

    from service.client import LatfarmClient
    with LatfarmClient("http://127.0.0.1:8000", token) as lf:
        pred = lf.predict(device=1, family="sr_block", configs=configs, frequency_khz=1_804_800)
        pred.latency_ms                       # numpy array, one value per config

How it is built, one concept per module: `models` (the typed results), `errors` (one hierarchy),
`operations` (every call written once as a sans-I/O generator of requests and sleeps — the style of
httpx's own internals), `retry` (the one retry policy, sans-I/O too) and `facades` (the two client classes,
which only perform the steps; their methods are documented once). `Snapshot` (a predictor loaded offline)
lives with the predictors and is imported from here lazily, so this package imports on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.client.errors import (
    LatfarmAPIError,
    LatfarmClientError,
    LatfarmConnectionError,
    LatfarmTimeoutError,
)
from service.client.facades import AsyncLatfarmClient, LatfarmClient
from service.client.models import (
    Accelerator,
    Campaign,
    CampaignRound,
    Cluster,
    Device,
    Job,
    Prediction,
    Predictor,
    Unit,
)
from service.client.retry import RetryPolicy

if TYPE_CHECKING:
    from service.predictors.snapshot import Snapshot

__all__ = [
    "Accelerator",
    "AsyncLatfarmClient",
    "Campaign",
    "CampaignRound",
    "Cluster",
    "Device",
    "Job",
    "LatfarmAPIError",
    "LatfarmClient",
    "LatfarmClientError",
    "LatfarmConnectionError",
    "LatfarmTimeoutError",
    "Prediction",
    "Predictor",
    "RetryPolicy",
    "Snapshot",
    "Unit",
]


def __getattr__(name: str) -> Any:
    # `Snapshot` needs xgboost and the predictors' features; importing it on first use keeps a client that
    # never loads a snapshot light.
    if name == "Snapshot":
        from service.predictors.snapshot import Snapshot

        return Snapshot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
