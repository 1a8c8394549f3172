"""Request and response bodies of `/v1/predictors` and `/v1/predict`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from profilers.adb.units import Precision
from service.bounds import INT32_MAX, REQUEST_BODY, DbId, DbInt, StrictInt, Text, exactly_one_of
from service.predictors.models import PredictorStatus


class TrainParams(BaseModel):
    """Overrides of the training defaults (`service.predictors.training.DEFAULT_PARAMS`)."""

    model_config = REQUEST_BODY

    n_estimators: StrictInt | None = Field(None, ge=1, le=20_000, description="most boosting rounds")
    learning_rate: float | None = Field(None, gt=0, le=1)
    max_depth: StrictInt | None = Field(None, ge=1, le=16)
    min_child_weight: float | None = Field(None, ge=0)
    subsample: float | None = Field(None, gt=0, le=1)
    colsample_bytree: float | None = Field(None, gt=0, le=1)
    reg_lambda: float | None = Field(None, ge=0)
    early_stopping_rounds: StrictInt | None = Field(None, ge=1, le=1000)
    holdout_fraction: float | None = Field(None, gt=0, lt=0.9)
    validation_fraction: float | None = Field(None, gt=0, lt=0.9)
    seed: StrictInt | None = Field(None, ge=0, le=INT32_MAX)
    refit: bool | None = Field(
        None, description="after scoring the holdout, grow the served models on every config (default true)"
    )
    kernel_prior: bool | None = Field(
        None, description="prior as per-kernel-shape costs (default true); false: FLOPs/bytes/layers terms"
    )
    selection: Literal["auto", "cv", "holdout"] | None = Field(
        None,
        description=(
            'how the serving candidate is chosen: "holdout"; "cv" (below 200 configs, 5-fold out-of-fold '
            'predictions pooled with the holdout); "auto" (default): "cv" for a transfer training, else '
            '"holdout"'
        ),
    )

    def overrides(self) -> dict[str, Any]:
        """Only the parameters given."""
        return self.model_dump(exclude_none=True)


def _unit_field(description: str) -> Any:
    """The compute unit (a CPU cluster's name, `gpu` or `npu`), read from `unit` or its former name
    `cluster`."""
    return Field(
        default=None,
        max_length=32,
        validation_alias=AliasChoices("unit", "cluster"),
        description=f"{description}; `cluster` is accepted as an alias",
    )


#: By name as well as by alias (a field's name is one of its aliases): what the type checker needs.
_ALIASED_BODY = ConfigDict(**REQUEST_BODY, validate_by_name=True)


class TrainFilters(BaseModel):
    """Which valid measurements to train on (all of the device and family by default): one unit or all
    (the unit is then a feature), one precision or all (likewise)."""

    model_config = _ALIASED_BODY

    frequencies_khz: list[Annotated[DbInt, Field(gt=0)]] | None = Field(
        None, min_length=1, description="only these frequencies; several ask for a multi-frequency model"
    )
    unit: Text | None = _unit_field("only measurements on this compute unit")
    precision: Precision | None = Field(None, description="only measurements at this precision")
    threads: StrictInt | None = Field(None, ge=1, le=INT32_MAX)
    runtime_name: Text | None = Field(None, max_length=64)
    include_virtual: bool = True
    exclude_config_hashes: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] | None = Field(
        None,
        max_length=10_000,
        description="never train on these configs (sha256 config hashes): a held-out set kept apart, "
        "as a bootstrap campaign keeps its own",
    )


#: Most peers one transfer training learns from (each adds a prediction per served row).
MAX_TRANSFER_PEERS = 16


class TransferRequest(BaseModel):
    """Learn from peers: other devices' active predictors of the same family (service.predictors.transfer).

    The run fits a transfer candidate beside the usual two, on the same split; it serves only where the
    run's selection says it beats them (`metrics.serving`, `metrics.transfer`)."""

    model_config = REQUEST_BODY

    peers: list[DbId] | Literal["all"] = Field(
        description=(
            'device ids whose active predictor of the family to learn from, or "all": every other device '
            "with one (that knows the unit the filters name, if they name one); a peer's predictor must not "
            "itself be a transfer predictor"
        ),
        examples=[[2, 3], "all"],
    )

    @model_validator(mode="after")
    def _distinct_and_bounded(self) -> TransferRequest:
        if isinstance(self.peers, list):
            if not 1 <= len(self.peers) <= MAX_TRANSFER_PEERS:
                raise ValueError(f"peers lists 1 to {MAX_TRANSFER_PEERS} device ids")
            if len(set(self.peers)) != len(self.peers):
                raise ValueError("peers lists a device more than once")
        return self


class PredictorCreate(BaseModel):
    """Train a predictor of `family` for device `device` (its id); with `transfer`, learning from peers."""

    model_config = REQUEST_BODY

    family: Text = Field(min_length=1, max_length=64)
    device: DbId
    params: TrainParams = Field(default_factory=TrainParams)
    filters: TrainFilters = Field(default_factory=TrainFilters)
    transfer: TransferRequest | None = Field(
        None, description="learn from other devices' predictors of the family (a transfer candidate)"
    )


class PredictorOut(BaseModel):
    """A predictor's status, metrics and provenance (never the model bytes)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    family: str
    device_id: int | None
    version: int
    status: PredictorStatus
    active: bool
    params: dict[str, Any]
    filters: dict[str, Any]
    metrics: dict[str, Any]
    feature_schema: dict[str, Any]
    transfer: dict[str, Any] | None = Field(
        None, description="the peer predictors a transfer training learns from (device, predictor, version)"
    )
    training_data_hash: str | None
    row_count: int | None
    library_versions: dict[str, str]
    error: str | None
    created_by: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    activated_at: dt.datetime | None

    @classmethod
    def from_row(cls, predictor: Any) -> PredictorOut:
        """The predictor as the API shows it; a stored row whose JSON fields do not fit (written by an
        older build, or by hand) is still shown — those fields emptied, `error` naming them — so one bad
        row never takes down a listing."""
        try:
            return cls.model_validate(predictor)
        except ValidationError as exc:
            bad = sorted({str(err["loc"][0]) for err in exc.errors() if err.get("loc")})
        blank: dict[str, Any] = {name: _EMPTY.get(name) for name in bad}
        fields = {name: getattr(predictor, name, None) for name in cls.model_fields}
        note = f"the stored record is malformed ({', '.join(bad)} not shown); re-import or retrain it"
        fields.update(blank, error=f"{fields.get('error')}; {note}" if fields.get("error") else note)
        return cls.model_validate(fields)


#: What a malformed stored field is shown as.
_EMPTY: dict[str, Any] = {
    "params": {},
    "filters": {},
    "metrics": {},
    "feature_schema": {},
    "library_versions": {},
    "training_data_hash": None,
    "row_count": None,
    "created_by": None,
}


class PredictRequest(BaseModel):
    """Configs to predict at one frequency or several (answers are config-major: all frequencies of
    config 0, then of config 1, …). `unit`/`precision`/`threads` default to the training data's most
    common; a unit or precision the predictor never saw is refused (422 naming it)."""

    model_config = ConfigDict(
        **_ALIASED_BODY,
        json_schema_extra=exactly_one_of({"frequency_khz": "integer", "frequencies_khz": "array"}),
    )

    device: DbId
    family: Text = Field(min_length=1, max_length=64)
    frequency_khz: StrictInt | None = Field(None, gt=0, le=INT32_MAX)
    frequencies_khz: list[Annotated[DbInt, Field(gt=0)]] | None = Field(None, min_length=1)
    configs: list[dict[str, Any]]
    unit: Text | None = _unit_field("compute unit: a CPU cluster's name, gpu or npu")
    precision: Precision | None = None
    threads: StrictInt | None = Field(None, ge=1, le=INT32_MAX)

    @model_validator(mode="after")
    def _one_frequency_field(self) -> PredictRequest:
        if (self.frequency_khz is None) == (self.frequencies_khz is None):
            raise ValueError("give exactly one of frequency_khz or frequencies_khz")
        if self.frequencies_khz is not None and any(f <= 0 for f in self.frequencies_khz):
            raise ValueError("frequencies_khz must all be positive")
        return self

    @property
    def frequencies(self) -> list[int]:
        """The requested frequencies as a list."""
        return [self.frequency_khz] if self.frequency_khz is not None else list(self.frequencies_khz or [])


class PredictionOut(BaseModel):
    latency_ms: float
    p10_ms: float
    p90_ms: float
    extrapolated: bool


class PredictResponse(BaseModel):
    """Predictions in request order (config-major over frequencies) and the predictor that made them."""

    predictor_id: int
    predictions: list[PredictionOut]
