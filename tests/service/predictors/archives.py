"""Snapshot archives: built from a training result and checked against the served model, and taken apart
and put back together, for tests that tamper with them."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.predictors.inference import LatencyModel, Predictions
from service.predictors.snapshot import Snapshot, build_snapshot
from service.predictors.training import TrainingResult


def archive_of(result: TrainingResult, family: str, feature_schema: Mapping[str, Any] | None = None) -> bytes:
    """The snapshot archive of a training result, as the service exports it (with `feature_schema` in
    place of the result's own when given)."""
    return build_snapshot(
        manifest={"family": family, "library_versions": result.library_versions},
        model=result.model,
        model_p10=result.model_p10,
        model_p90=result.model_p90,
        feature_schema=result.feature_schema if feature_schema is None else feature_schema,
        metrics=result.metrics,
        holdout=result.holdout,
    )


def assert_predicts_as_served(
    snapshot: Snapshot,
    served: LatencyModel,
    configs: Sequence[Mapping[str, Any]],
    frequencies_khz: Sequence[int],
) -> Predictions:
    """The snapshot answers `configs` bit for bit as the served model does (mean, band and extrapolation);
    returns the served model's answers."""
    got = snapshot.predict(snapshot.family, configs, frequencies_khz=frequencies_khz)
    want = served.predict(configs, frequencies_khz)
    for name in ("latency_ms", "p10_ms", "p90_ms", "extrapolated"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    return want


def members(archive: bytes) -> dict[str, bytes]:
    """Each member's bytes by name."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def pack(contents: dict[str, bytes]) -> bytes:
    """A tar archive of these members, in this order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
