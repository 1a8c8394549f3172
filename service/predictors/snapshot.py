"""Predictor snapshots: one tar archive that predicts offline exactly as the service does.

Members (all regular files at the archive's top level, nothing else is accepted):

    manifest.json        format + version, family, device, predictor facts, library versions,
                         and {member: {sha256, size}} for every other member
    model.ubj            the median model     (XGBoost UBJSON: `Booster.save_raw("ubj")`)
    model_p10.ubj        the p10 model        (reg:quantileerror, alpha 0.1)
    model_p90.ubj        the p90 model        (alpha 0.9)
    feature_schema.json  what `Featurizer.from_schema` needs, the prior and the training ranges
    metrics.json         holdout metrics
    holdout.json         holdout rows (predicted vs measured)

Reading verifies everything before returning anything: the member set, each sha256 and size, the format
and features versions, and that the models load. Nothing is unpickled, ever; this module imports no
database code (`service.client.Snapshot` re-exports `Snapshot`).

    snap = Snapshot.load("sr_block-device3-v2.tar")
    snap.predict("sr_block", configs, frequencies_khz=[1_200_000, 2_400_000]).latency_ms
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xgboost as xgb

from service.predictors.features import FEATURES_VERSION, READABLE_FEATURE_VERSIONS
from service.predictors.inference import LatencyModel, Predictions

SNAPSHOT_FORMAT = "latfarm.predictor-snapshot"
SNAPSHOT_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MEMBERS = (
    "model.ubj",
    "model_p10.ubj",
    "model_p90.ubj",
    "feature_schema.json",
    "metrics.json",
    "holdout.json",
)
#: Largest archive read (models of 10⁵ trees stay far below it).
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024


class SnapshotError(ValueError):
    """A snapshot that is corrupt, tampered with or incompatible with this build; the message says which."""


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1).encode()


def build_snapshot(
    *,
    manifest: Mapping[str, Any],
    model: bytes,
    model_p10: bytes,
    model_p90: bytes,
    feature_schema: Mapping[str, Any],
    metrics: Mapping[str, Any],
    holdout: Sequence[Mapping[str, Any]],
    mtime: float = 0.0,
) -> bytes:
    """The archive bytes; `manifest` gets the format fields and the member hashes added."""
    payload = {
        "model.ubj": model,
        "model_p10.ubj": model_p10,
        "model_p90.ubj": model_p90,
        "feature_schema.json": _json_bytes(feature_schema),
        "metrics.json": _json_bytes(metrics),
        "holdout.json": _json_bytes(list(holdout)),
    }
    full_manifest = {
        **manifest,
        "format": SNAPSHOT_FORMAT,
        "format_version": SNAPSHOT_FORMAT_VERSION,
        # The version the predictor's features were computed with (an older predictor keeps its own).
        "features_version": feature_schema.get("features_version", FEATURES_VERSION),
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in payload.items()
        },
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in [(MANIFEST, _json_bytes(full_manifest)), *payload.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(mtime)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class SnapshotContents:
    """A verified snapshot's parts."""

    manifest: dict[str, Any]
    model: bytes
    model_p10: bytes
    model_p90: bytes
    feature_schema: dict[str, Any]
    metrics: dict[str, Any]
    holdout: list[dict[str, Any]]


def _read_members(data: bytes) -> dict[str, bytes]:
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"a snapshot is at most {MAX_SNAPSHOT_BYTES} bytes; this one has {len(data)}")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for info in archive:
                if not info.isfile():
                    raise SnapshotError(f"member {info.name!r} is not a regular file")
                if info.name not in (MANIFEST, *MEMBERS):
                    raise SnapshotError(f"unexpected member {info.name!r}")
                if info.name in members:
                    raise SnapshotError(f"member {info.name!r} appears twice")
                extracted = archive.extractfile(info)
                if extracted is None:
                    raise SnapshotError(f"member {info.name!r} cannot be read")
                members[info.name] = extracted.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SnapshotError(f"not a readable snapshot archive (a .tar): {exc}") from None
    return members


def _parse_json(name: str, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{name} is not valid JSON: {exc}") from None


def _check_compatible(manifest: Mapping[str, Any]) -> None:
    if manifest.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"manifest format is {manifest.get('format')!r}, not {SNAPSHOT_FORMAT!r}")
    if manifest.get("format_version") != SNAPSHOT_FORMAT_VERSION:
        raise SnapshotError(
            f"incompatible snapshot: format version {manifest.get('format_version')!r}, "
            f"this build reads version {SNAPSHOT_FORMAT_VERSION}"
        )
    if manifest.get("features_version") not in READABLE_FEATURE_VERSIONS:
        readable = ", ".join(map(str, READABLE_FEATURE_VERSIONS))
        raise SnapshotError(
            f"incompatible snapshot: features version {manifest.get('features_version')!r}, "
            f"this build reads versions {readable}; retrain or use a matching latfarm"
        )
    made_with = str(manifest.get("library_versions", {}).get("xgboost", "0"))
    try:
        made_major = int(made_with.split(".")[0])
    except ValueError:
        raise SnapshotError(f"incompatible snapshot: unreadable xgboost version {made_with!r}") from None
    ours = int(xgb.__version__.split(".")[0])
    if made_major > ours:
        raise SnapshotError(
            f"incompatible snapshot: made with xgboost {made_with}, newer than this build's {xgb.__version__}"
        )


def read_snapshot(data: bytes) -> SnapshotContents:
    """Verify an archive (members, hashes, versions, loadable models) and return its parts."""
    members = _read_members(data)
    if MANIFEST not in members:
        raise SnapshotError("the archive has no manifest.json")
    manifest = _parse_json(MANIFEST, members[MANIFEST])
    if not isinstance(manifest, dict):
        raise SnapshotError("manifest.json must be a JSON object")
    _check_compatible(manifest)
    listed = manifest.get("members")
    if not isinstance(listed, dict) or set(listed) != set(MEMBERS):
        raise SnapshotError(f"the manifest must list exactly these members: {', '.join(MEMBERS)}")
    for name in MEMBERS:
        if name not in members:
            raise SnapshotError(f"member {name!r} is missing from the archive")
        entry = listed[name]
        digest = hashlib.sha256(members[name]).hexdigest()
        if not isinstance(entry, dict) or entry.get("sha256") != digest:
            raise SnapshotError(f"member {name!r} does not match its sha256 in the manifest (tampered?)")
        if entry.get("size") != len(members[name]):
            raise SnapshotError(f"member {name!r} does not have the size the manifest gives")
    contents = SnapshotContents(
        manifest=manifest,
        model=members["model.ubj"],
        model_p10=members["model_p10.ubj"],
        model_p90=members["model_p90.ubj"],
        feature_schema=_parse_json("feature_schema.json", members["feature_schema.json"]),
        metrics=_parse_json("metrics.json", members["metrics.json"]),
        holdout=_parse_json("holdout.json", members["holdout.json"]),
    )
    if contents.feature_schema.get("family") != manifest.get("family"):
        raise SnapshotError("the feature schema and the manifest name different families")
    return contents


class Snapshot:
    """An exported predictor, loaded for offline use: `Snapshot.load(path).predict(family, configs, …)`."""

    def __init__(self, contents: SnapshotContents) -> None:
        self.contents = contents
        self.manifest = contents.manifest
        self.family: str = str(contents.manifest["family"])
        self.metrics = contents.metrics
        try:
            self.model = LatencyModel(
                contents.feature_schema, contents.model, contents.model_p10, contents.model_p90
            )
        except (ValueError, KeyError, TypeError, xgb.core.XGBoostError) as exc:
            raise SnapshotError(f"the snapshot's models or feature schema cannot be loaded: {exc}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        """Verify and load an archive held in memory."""
        return cls(read_snapshot(data))

    @classmethod
    def load(cls, path: str | Path) -> Snapshot:
        """Verify and load an archive file (as downloaded from `GET /v1/predictors/{id}/snapshot`)."""
        return cls.from_bytes(Path(path).read_bytes())

    def predict(
        self,
        family: str,
        configs: Sequence[Mapping[str, Any]],
        frequency_khz: int | None = None,
        *,
        frequencies_khz: Sequence[int] | None = None,
        cluster: str | None = None,
        threads: int | None = None,
    ) -> Predictions:
        """Predictions as the service computes them: config-major over `frequencies_khz` when several."""
        if family != self.family:
            raise ValueError(f"this snapshot predicts {self.family!r}, not {family!r}")
        if (frequency_khz is None) == (frequencies_khz is None):
            raise ValueError("give exactly one of frequency_khz or frequencies_khz")
        freqs = [frequency_khz] if frequency_khz is not None else list(frequencies_khz or [])
        return self.model.predict(configs, freqs, cluster=cluster, threads=threads)
