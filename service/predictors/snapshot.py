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
    peers.bin            only a transfer predictor's: its peers' packed median models (transfer.py);
                         an archive without it is every other predictor's, as before

Reading verifies everything before returning anything: the member set, the manifest's own digest, its
schema (`Manifest`: strict types, bounded integers), each member's sha256 and size, the type of every JSON
member, the format and features versions, and that the models load. Nothing is unpickled, ever; this
module imports no database code (`service.client.Snapshot` re-exports `Snapshot`).

Format versions. Version 2 (written now) seals the manifest: `manifest_sha256` is the sha256 of the
manifest's canonical JSON (sorted keys, indent 1) without that field, and manifest.json must be exactly
that canonical text — so every byte of the archive is covered by a checksum and a single flipped bit
anywhere is refused. Version 1 (no seal) is what earlier builds exported: it still loads, validated by
the same schema, but its manifest is only as trustworthy as its transport.

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
from typing import Annotated, Any, Literal

import xgboost as xgb
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from service.predictors.features import FEATURES_VERSION, READABLE_FEATURE_VERSIONS
from service.predictors.inference import LatencyModel, Predictions
from service.predictors.transfer import unpack_peers

SNAPSHOT_FORMAT = "latfarm.predictor-snapshot"
SNAPSHOT_FORMAT_VERSION = 2
#: Format versions this build reads (1: before the manifest was sealed by its own digest).
READABLE_FORMAT_VERSIONS = (1, 2)
#: The manifest field holding the digest of the rest of the manifest (format version 2 on).
MANIFEST_DIGEST = "manifest_sha256"
MANIFEST = "manifest.json"
MEMBERS = (
    "model.ubj",
    "model_p10.ubj",
    "model_p90.ubj",
    "feature_schema.json",
    "metrics.json",
    "holdout.json",
)
#: Members only some snapshots have: a transfer predictor's peers.
OPTIONAL_MEMBERS = ("peers.bin",)
#: Largest archive read (models of 10⁵ trees stay far below it).
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024
#: Ids and counts are stored in 32-bit integer columns (PostgreSQL `integer`).
MAX_INT32 = 2**31 - 1
#: Most holdout rows a snapshot may carry (training keeps at most 5,000).
MAX_HOLDOUT_ROWS = 100_000


class SnapshotError(ValueError):
    """A snapshot that is corrupt, tampered with or incompatible with this build; the message says which."""


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1).encode()


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """The seal of a manifest: sha256 of its canonical JSON without the `manifest_sha256` field."""
    return hashlib.sha256(
        _json_bytes({k: v for k, v in manifest.items() if k != MANIFEST_DIGEST})
    ).hexdigest()


def seal_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The canonical manifest.json text of `manifest`, with its `manifest_sha256` (re)computed."""
    return _json_bytes({**manifest, MANIFEST_DIGEST: manifest_digest(manifest)})


# -- the schema of the JSON parts ---------------------------------------------------------------------------
_Id = Annotated[StrictInt, Field(ge=1, le=MAX_INT32)]
_Count = Annotated[StrictInt, Field(ge=0, le=MAX_INT32)]
_Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
_Short = Annotated[StrictStr, Field(max_length=200)]
_Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MemberEntry(_Strict):
    """A member's checksum and size, as the manifest lists it."""

    sha256: _Sha256
    size: Annotated[StrictInt, Field(ge=0, le=MAX_SNAPSHOT_BYTES)]


class PredictorFacts(_Strict):
    """Where the predictor came from: its id, version, training parameters and data."""

    id: _Id | None = None
    version: _Id | None = None
    # Names and ranges are the service's to check (`TrainParams`, `TrainFilters`); here, JSON types only.
    params: dict[_Short, _Scalar] = Field(default_factory=dict, max_length=64)
    filters: dict[_Short, _Scalar | list[StrictInt]] = Field(default_factory=dict, max_length=64)
    training_data_hash: _Sha256 | None = None
    row_count: _Count | None = None
    created_at: _Short | None = None
    finished_at: _Short | None = None


class Manifest(_Strict):
    """manifest.json, validated before anything is read from the other members or written anywhere."""

    format: Literal["latfarm.predictor-snapshot"]
    format_version: Literal[1, 2]
    features_version: StrictInt
    family: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    device_id: _Id | None = None
    library_versions: dict[_Short, _Short] = Field(default_factory=dict, max_length=64)
    predictor: PredictorFacts = Field(default_factory=PredictorFacts)
    members: dict[Literal[(*MEMBERS, *OPTIONAL_MEMBERS)], MemberEntry]  # type: ignore[valid-type]
    manifest_sha256: _Sha256 | None = None


class _FeatureSchemaHead(BaseModel):
    """The fields of feature_schema.json checked here; `LatencyModel` checks the rest when it loads."""

    model_config = ConfigDict(extra="allow", strict=True)

    family: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    features_version: StrictInt


class _Accuracy(BaseModel):
    """Holdout accuracy figures (`training.accuracy_metrics`); other keys must be JSON scalars or maps."""

    model_config = ConfigDict(extra="allow", strict=True)

    rows: _Count | None = None
    rmse_ms: StrictFloat | StrictInt | None = None
    mape: StrictFloat | StrictInt | None = None
    within_5: StrictFloat | StrictInt | None = None
    within_10: StrictFloat | StrictInt | None = None
    spearman: StrictFloat | StrictInt | None = None


class Metrics(_Accuracy):
    """metrics.json: the accuracy figures, per frequency, and the split and round counts."""

    per_frequency: dict[_Short, _Accuracy] = Field(default_factory=dict)
    split: dict[_Short, _Count] = Field(default_factory=dict)
    boost_rounds: dict[_Short, _Count] = Field(default_factory=dict)
    refit_rows: _Count | None = None


class HoldoutRow(BaseModel):
    """One holdout row of holdout.json: a config, its frequency, measured vs predicted."""

    model_config = ConfigDict(extra="allow", strict=True)

    config_hash: _Short
    frequency_khz: _Count
    measured_ms: StrictFloat | StrictInt
    predicted_ms: StrictFloat | StrictInt


_HOLDOUT = TypeAdapter(list[HoldoutRow])


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg')}{more}"


def _validated(name: str, model: type[BaseModel], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise SnapshotError(f"{name} is malformed at {_first_error(exc)}") from None


def build_snapshot(
    *,
    manifest: Mapping[str, Any],
    model: bytes,
    model_p10: bytes,
    model_p90: bytes,
    feature_schema: Mapping[str, Any],
    metrics: Mapping[str, Any],
    holdout: Sequence[Mapping[str, Any]],
    peers: bytes | None = None,
    mtime: float = 0.0,
) -> bytes:
    """The archive bytes; `manifest` gets the format fields and the member hashes added. `peers`: a
    transfer predictor's packed peer models (`peers.bin`)."""
    payload = {
        "model.ubj": model,
        "model_p10.ubj": model_p10,
        "model_p90.ubj": model_p90,
        "feature_schema.json": _json_bytes(feature_schema),
        "metrics.json": _json_bytes(metrics),
        "holdout.json": _json_bytes(list(holdout)),
    }
    if peers is not None:
        payload["peers.bin"] = peers
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
        for name, data in [(MANIFEST, seal_manifest(full_manifest)), *payload.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(mtime)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class SnapshotContents:
    """A verified snapshot's parts (`facts`: the manifest as validated)."""

    manifest: dict[str, Any]
    facts: Manifest
    model: bytes
    model_p10: bytes
    model_p90: bytes
    feature_schema: dict[str, Any]
    metrics: dict[str, Any]
    holdout: list[dict[str, Any]]
    peers: bytes | None = None


def _read_members(data: bytes) -> dict[str, bytes]:
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"a snapshot is at most {MAX_SNAPSHOT_BYTES} bytes; this one has {len(data)}")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for info in archive:
                if not info.isfile():
                    raise SnapshotError(f"member {info.name!r} is not a regular file")
                if info.name not in (MANIFEST, *MEMBERS, *OPTIONAL_MEMBERS):
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


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _parse_json(name: str, raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity and no NUL character (neither can be stored in PostgreSQL's JSONB)."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SnapshotError(f"{name} is not valid JSON: {exc}") from None
    if _has_nul(value):
        raise SnapshotError(f"{name} holds a NUL character")
    return value


def _check_format(manifest: Mapping[str, Any]) -> None:
    """The format and its version, before anything else (an unknown format is not validated further)."""
    if manifest.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"manifest format is {manifest.get('format')!r}, not {SNAPSHOT_FORMAT!r}")
    version = manifest.get("format_version")
    if type(version) is not int or version not in READABLE_FORMAT_VERSIONS:
        readable = ", ".join(map(str, READABLE_FORMAT_VERSIONS))
        raise SnapshotError(
            f"incompatible snapshot: format version {version!r}, this build reads versions {readable}"
        )


def _check_sealed(manifest: Mapping[str, Any], raw: bytes) -> None:
    """Format 2 on: the manifest's digest matches, and the file is exactly its canonical text."""
    if manifest["format_version"] < 2:
        return
    if manifest.get(MANIFEST_DIGEST) != manifest_digest(manifest):
        raise SnapshotError("manifest.json does not match its manifest_sha256 (tampered?)")
    if raw != _json_bytes(manifest):
        raise SnapshotError("manifest.json is not in canonical form (sorted keys, indent 1) (tampered?)")


def _check_versions(facts: Manifest) -> None:
    if facts.features_version not in READABLE_FEATURE_VERSIONS:
        readable = ", ".join(map(str, READABLE_FEATURE_VERSIONS))
        raise SnapshotError(
            f"incompatible snapshot: features version {facts.features_version!r}, "
            f"this build reads versions {readable}; retrain or use a matching latfarm"
        )
    made_with = facts.library_versions.get("xgboost", "0")
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
    """Verify an archive (members, manifest seal and schema, hashes, JSON types, versions) and return its
    parts; raises `SnapshotError` naming the first problem."""
    members = _read_members(data)
    if MANIFEST not in members:
        raise SnapshotError("the archive has no manifest.json")
    manifest = _parse_json(MANIFEST, members[MANIFEST])
    if not isinstance(manifest, dict):
        raise SnapshotError("manifest.json must be a JSON object")
    _check_format(manifest)
    _check_sealed(manifest, members[MANIFEST])
    listed = manifest.get("members")
    if not isinstance(listed, dict) or set(listed) - set(OPTIONAL_MEMBERS) != set(MEMBERS):
        raise SnapshotError(
            f"the manifest must list exactly these members: {', '.join(MEMBERS)} "
            f"(and optionally {', '.join(OPTIONAL_MEMBERS)})"
        )
    facts: Manifest = _validated(MANIFEST, Manifest, manifest)
    if facts.format_version >= 2 and facts.manifest_sha256 is None:
        raise SnapshotError("manifest.json has no manifest_sha256")
    _check_versions(facts)
    for name in [*MEMBERS, *(m for m in OPTIONAL_MEMBERS if m in listed)]:
        if name not in members:
            raise SnapshotError(f"member {name!r} is missing from the archive")
        entry = facts.members[name]
        if entry.sha256 != hashlib.sha256(members[name]).hexdigest():
            raise SnapshotError(f"member {name!r} does not match its sha256 in the manifest (tampered?)")
        if entry.size != len(members[name]):
            raise SnapshotError(f"member {name!r} does not have the size the manifest gives")
    feature_schema = _parse_json("feature_schema.json", members["feature_schema.json"])
    head: _FeatureSchemaHead = _validated("feature_schema.json", _FeatureSchemaHead, feature_schema)
    metrics = _parse_json("metrics.json", members["metrics.json"])
    _validated("metrics.json", Metrics, metrics)
    holdout = _parse_json("holdout.json", members["holdout.json"])
    if not isinstance(holdout, list) or len(holdout) > MAX_HOLDOUT_ROWS:
        raise SnapshotError(f"holdout.json must be a JSON array of at most {MAX_HOLDOUT_ROWS} rows")
    try:
        _HOLDOUT.validate_python(holdout)
    except ValidationError as exc:
        raise SnapshotError(f"holdout.json is malformed at row {_first_error(exc)}") from None
    if head.family != facts.family:
        raise SnapshotError("the feature schema and the manifest name different families")
    if set(members) - {MANIFEST} != set(listed):
        raise SnapshotError("the archive holds a member its manifest does not list")
    return SnapshotContents(
        manifest=manifest,
        facts=facts,
        model=members["model.ubj"],
        model_p10=members["model_p10.ubj"],
        model_p90=members["model_p90.ubj"],
        feature_schema=feature_schema,
        metrics=metrics,
        holdout=holdout,
        peers=members.get("peers.bin"),
    )


class Snapshot:
    """An exported predictor, loaded for offline use: `Snapshot.load(path).predict(family, configs, …)`."""

    def __init__(self, contents: SnapshotContents) -> None:
        self.contents = contents
        self.manifest = contents.manifest
        self.family: str = contents.facts.family
        self.metrics = contents.metrics
        try:
            peers = unpack_peers(contents.peers) if contents.peers is not None else []
            self.model = LatencyModel(
                contents.feature_schema, contents.model, contents.model_p10, contents.model_p90, peers
            )
        # Whatever a crafted schema or model makes the loader raise, it is a refusal, never a crash.
        except Exception as exc:
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
        precision: str | None = None,
    ) -> Predictions:
        """Predictions as the service computes them: config-major over `frequencies_khz` when several;
        `cluster` is the compute unit. A unit or precision the predictor never saw raises
        `UnseenConditionError` (a ValueError naming it)."""
        if family != self.family:
            raise ValueError(f"this snapshot predicts {self.family!r}, not {family!r}")
        if (frequency_khz is None) == (frequencies_khz is None):
            raise ValueError("give exactly one of frequency_khz or frequencies_khz")
        freqs = [frequency_khz] if frequency_khz is not None else list(frequencies_khz or [])
        return self.model.predict(configs, freqs, cluster=cluster, threads=threads, precision=precision)
