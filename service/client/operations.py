"""latfarm's HTTP interface v1 as sans-I/O operations, each written once for both client facades.

An operation is a generator: it yields a `Request` and receives the `httpx.Response` to it (only a success:
error answers are raised by the retry policy before the operation sees them), or yields a `Sleep` while it
polls and receives `None`; its return value is the call's typed result. The operation decides the method,
path, body and how to read the answer, and whether the call is idempotent — nothing here performs I/O, so
the blocking and the asyncio facades (`service.client.facades`) run the very same steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel

from service.client.errors import LatfarmClientError, LatfarmTimeoutError
from service.client.models import Campaign, Device, Job, Prediction, Predictor

T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=BaseModel)


class _Progressing(Protocol):
    """What a wait polls: a job or a predictor."""

    @property
    def status(self) -> str: ...

    @property
    def finished(self) -> bool: ...


PolledT = TypeVar("PolledT", bound=_Progressing)

#: Items asked for per page of a list (the server caps it at its `page_size_max`).
PAGE_SIZE = 1000


@dataclass(frozen=True)
class Request:
    """One HTTP call to make. `idempotent`: repeating it cannot do a thing twice, so it may be retried even
    after it may have reached the server."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    idempotent: bool = True


@dataclass(frozen=True)
class Sleep:
    """Wait this long before the next step (a poll's interval, a retry's backoff)."""

    seconds: float


Step = Request | Sleep
#: The value sent back depends on the step yielded (a response for a `Request`, None for a `Sleep`), which
#: a generator's type cannot say; hence `Any` for what the operation receives.
Operation = Generator[Step, Any, T]


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _json_of(request: Request) -> Operation[Any]:
    response: httpx.Response = yield request
    return response.json()


def _model_of(request: Request, model: type[ModelT]) -> Operation[ModelT]:
    response: httpx.Response = yield request
    return model.model_validate(response.json())


def _paged(path: str, params: Mapping[str, Any], page_size: int) -> Operation[list[dict[str, Any]]]:
    """Every item of a keyset-paginated list ({items, next_cursor}), page after page."""
    items: list[dict[str, Any]] = []
    query = {"limit": page_size, **_drop_none(params)}
    while True:
        response: httpx.Response = yield Request("GET", path, params=query)
        page = response.json()
        if isinstance(page, list):  # an endpoint that answers its whole list at once
            return page
        items.extend(page["items"])
        if page.get("next_cursor") is None:
            return items
        query = {**query, "cursor": page["next_cursor"]}


def _poll(
    get: Callable[[], Operation[PolledT]],
    progress: Callable[[PolledT], None] | None,
    poll_s: float,
    timeout_s: float | None,
    what: str,
) -> Operation[PolledT]:
    # Polling with a bounded deadline: the HTTP interface has no push channel for job progress.
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        current = yield from get()
        if progress is not None:
            progress(current)
        if current.finished:
            return current
        if deadline is not None and time.monotonic() >= deadline:
            raise LatfarmTimeoutError(f"{what} is still {current.status} after {timeout_s:g} s")
        yield Sleep(poll_s)


def _config_dicts(configs: Sequence[Any]) -> list[Any]:
    return [c.model_dump(mode="json") if isinstance(c, BaseModel) else c for c in configs]


def _prediction(body: Mapping[str, Any], n_configs: int, frequencies: list[int] | None) -> Prediction:
    rows = list(body["predictions"])
    shape: tuple[int, ...] = (n_configs,) if frequencies is None else (n_configs, len(frequencies))
    if len(rows) != int(np.prod(shape)):
        raise LatfarmClientError(f"the server returned {len(rows)} predictions for a {shape} request")

    def floats(name: str) -> npt.NDArray[np.float64]:
        values = [np.nan if row.get(name) is None else row[name] for row in rows]
        return np.asarray(values, dtype=np.float64).reshape(shape)

    return Prediction(
        predictor_id=body.get("predictor_id"),
        latency_ms=floats("latency_ms"),
        p10_ms=floats("p10_ms"),
        p90_ms=floats("p90_ms"),
        extrapolated=np.asarray([row.get("extrapolated") for row in rows], dtype=np.bool_).reshape(shape),
        frequencies_khz=frequencies,
        raw=rows,
    )


# --- health ---------------------------------------------------------------------------------------------


def health() -> Operation[dict[str, Any]]:
    """`GET /healthz`."""
    return _json_of(Request("GET", "/healthz"))


# --- devices --------------------------------------------------------------------------------------------


def register_device(
    serial: str, transport: str, address: str | None, name: str | None, tags: Sequence[str] | None
) -> Operation[Device]:
    """`POST /v1/devices`; not idempotent (a second attempt would meet the first's serial)."""
    body = _drop_none(
        {"serial": serial, "transport": transport, "address": address, "name": name, "tags": tags}
    )
    return _model_of(Request("POST", "/v1/devices", json=body, idempotent=False), Device)


def list_devices(status: str | None, tag: str | None, page_size: int) -> Operation[list[Device]]:
    """`GET /v1/devices`, every page."""
    items = yield from _paged("/v1/devices", {"status": status, "tag": tag}, page_size)
    return [Device.model_validate(item) for item in items]


def get_device(device_id: int) -> Operation[Device]:
    """`GET /v1/devices/{id}`."""
    return _model_of(Request("GET", f"/v1/devices/{device_id}"), Device)


def update_device(device_id: int, changes: Mapping[str, Any]) -> Operation[Device]:
    """`PATCH /v1/devices/{id}` with the changes that are not None."""
    return _model_of(Request("PATCH", f"/v1/devices/{device_id}", json=_drop_none(changes)), Device)


def delete_device(device_id: int) -> Operation[None]:
    """`DELETE /v1/devices/{id}`."""
    yield Request("DELETE", f"/v1/devices/{device_id}")
    return None


def probe_device(device_id: int) -> Operation[Device]:
    """`POST /v1/devices/{id}/probe`."""
    return _model_of(Request("POST", f"/v1/devices/{device_id}/probe"), Device)


# --- jobs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitChoice:
    """Where and how a job's tasks run — the `runtime` settings of #12, each None for the server's default:
    the compute unit (a CPU cluster, `gpu`, `npu`), the precision (`fp32`, `fp16`, `int8`), the benchmark
    program (`onnxruntime`, `tflite`), its accelerator option and whether to record per-layer times."""

    unit: str | None = None
    precision: str | None = None
    benchmark: str | None = None
    accelerator: str | None = None
    layer_profile: bool | None = None

    def merged_into(self, runtime: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """`runtime` with these settings added; LatfarmClientError when `runtime` already says otherwise
        (`cluster` counts as the unit's older name)."""
        merged = dict(runtime or {})
        chosen = _drop_none(
            {
                "unit": self.unit,
                "precision": self.precision,
                "benchmark": self.benchmark,
                "accelerator": self.accelerator,
                "layer_profile": self.layer_profile,
            }
        )
        for key, value in chosen.items():
            names = ("unit", "cluster") if key == "unit" else (key,)
            for name in names:
                if merged.get(name) is not None and merged[name] != value:
                    raise LatfarmClientError(
                        f"runtime[{name!r}] is {merged[name]!r} but {key}={value!r} was given: give one"
                    )
                merged.pop(name, None)
            merged[key] = value
        return merged if merged or runtime is not None else None


def submit_job(
    family: str,
    configs: Sequence[Any] | None,
    devices: Sequence[int | str] | None,
    frequencies: Sequence[int] | str | None,
    runtime: Mapping[str, Any] | None,
    priority: int | None,
    force: bool | None,
    sampler: Mapping[str, Any] | None,
    selector: Mapping[str, Any] | None,
    choice: UnitChoice | None = None,
) -> Operation[Job]:
    """`POST /v1/jobs`; not idempotent, so a job is never submitted twice by a retry. `choice` (unit,
    precision, benchmark, accelerator, per-layer profile) goes into the body's `runtime`."""
    runtime = (choice or UnitChoice()).merged_into(runtime)
    body = {
        "family": family,
        "configs": None if configs is None else _config_dicts(configs),
        "sampler": sampler,
        "devices": None if devices is None else list(devices),
        "selector": selector,
        "frequencies": frequencies if frequencies is None or isinstance(frequencies, str)
        else [int(f) for f in frequencies],
        "runtime": runtime,
        "priority": priority,
        "force": force,
    }  # fmt: skip
    return _model_of(Request("POST", "/v1/jobs", json=_drop_none(body), idempotent=False), Job)


def get_job(job_id: int) -> Operation[Job]:
    """`GET /v1/jobs/{id}`."""
    return _model_of(Request("GET", f"/v1/jobs/{job_id}"), Job)


def list_jobs(status: str | None, page_size: int) -> Operation[list[Job]]:
    """`GET /v1/jobs`, every page."""
    items = yield from _paged("/v1/jobs", {"status": status}, page_size)
    return [Job.model_validate(item) for item in items]


def list_tasks(job_id: int, page_size: int) -> Operation[list[dict[str, Any]]]:
    """`GET /v1/jobs/{id}/tasks`, every page."""
    return _paged(f"/v1/jobs/{job_id}/tasks", {}, page_size)


def cancel_job(job_id: int) -> Operation[Job]:
    """`POST /v1/jobs/{id}/cancel` (cancelling twice is cancelling once)."""
    return _model_of(Request("POST", f"/v1/jobs/{job_id}/cancel"), Job)


def wait_job(
    job_id: int, progress: Callable[[Job], None] | None, poll_s: float, timeout_s: float | None
) -> Operation[Job]:
    """Poll `GET /v1/jobs/{id}` until the job is done, failed or cancelled."""
    return _poll(lambda: get_job(job_id), progress, poll_s, timeout_s, f"job {job_id}")


# --- bootstrap campaigns -------------------------------------------------------------------------------


def start_campaign(device: int, body: Mapping[str, Any]) -> Operation[Campaign]:
    """`POST /v1/devices/{id}/bootstrap`: start a bootstrap campaign."""
    request = Request("POST", f"/v1/devices/{device}/bootstrap", json=_drop_none(body), idempotent=False)
    return _model_of(request, Campaign)


def get_campaign(campaign_id: int) -> Operation[Campaign]:
    """`GET /v1/campaigns/{id}`."""
    return _model_of(Request("GET", f"/v1/campaigns/{campaign_id}"), Campaign)


def list_campaigns(device: int | None, status: str | None, page_size: int) -> Operation[list[Campaign]]:
    """`GET /v1/campaigns`, every page."""
    items = yield from _paged("/v1/campaigns", {"device": device, "status": status}, page_size)
    return [Campaign.model_validate(item) for item in items]


def cancel_campaign(campaign_id: int) -> Operation[Campaign]:
    """`POST /v1/campaigns/{id}/cancel`."""
    return _model_of(Request("POST", f"/v1/campaigns/{campaign_id}/cancel", idempotent=False), Campaign)


def wait_campaign(
    campaign_id: int, progress: Callable[[Campaign], None] | None, poll_s: float, timeout_s: float | None
) -> Operation[Campaign]:
    """Poll `GET /v1/campaigns/{id}` until the campaign is over."""
    what = f"campaign {campaign_id}"
    return _poll(lambda: get_campaign(campaign_id), progress, poll_s, timeout_s, what)


# --- measurements ---------------------------------------------------------------------------------------


def measurements(filters: Mapping[str, Any], page_size: int) -> Operation[pd.DataFrame]:
    """`GET /v1/measurements?format=json`, every page, as a DataFrame."""
    # List filters (e.g. several frequencies) travel as comma-separated values.
    params = {k: ",".join(map(str, v)) if isinstance(v, list | tuple) else v for k, v in filters.items()}
    items = yield from _paged("/v1/measurements", {**params, "format": "json"}, page_size)
    return pd.DataFrame.from_records(items)


def import_measurements(rows: Sequence[Mapping[str, Any]]) -> Operation[int]:
    """`POST /v1/measurements/import`; returns how many rows were stored."""
    body = {"rows": [dict(r) for r in rows]}
    response: httpx.Response = yield Request("POST", "/v1/measurements/import", json=body, idempotent=False)
    return int(response.json()["imported"])


# --- predictors -----------------------------------------------------------------------------------------


def train_predictor(
    family: str,
    device: int,
    params: Mapping[str, Any] | None,
    filters: Mapping[str, Any] | None,
    transfer: Mapping[str, Any] | None = None,
) -> Operation[Predictor]:
    """`POST /v1/predictors`: start a training (with `transfer`, learning from peers too)."""
    body = _drop_none(
        {"family": family, "device": device, "params": params, "filters": filters, "transfer": transfer}
    )
    return _model_of(Request("POST", "/v1/predictors", json=body, idempotent=False), Predictor)


def get_predictor(predictor_id: int) -> Operation[Predictor]:
    """`GET /v1/predictors/{id}`."""
    return _model_of(Request("GET", f"/v1/predictors/{predictor_id}"), Predictor)


def list_predictors(family: str | None, device: int | None, page_size: int) -> Operation[list[Predictor]]:
    """`GET /v1/predictors`, every page."""
    items = yield from _paged("/v1/predictors", {"family": family, "device": device}, page_size)
    return [Predictor.model_validate(item) for item in items]


def activate_predictor(predictor_id: int) -> Operation[Predictor]:
    """`POST /v1/predictors/{id}/activate`."""
    return _model_of(Request("POST", f"/v1/predictors/{predictor_id}/activate"), Predictor)


def wait_predictor(
    predictor_id: int, progress: Callable[[Predictor], None] | None, poll_s: float, timeout_s: float | None
) -> Operation[Predictor]:
    """Poll `GET /v1/predictors/{id}` until training is ready or failed."""
    what = f"predictor {predictor_id}"
    return _poll(lambda: get_predictor(predictor_id), progress, poll_s, timeout_s, what)


def predict(
    device: int,
    family: str,
    configs: Sequence[Any],
    frequency_khz: int | None,
    frequencies_khz: Sequence[int] | None,
    unit: str | None = None,
    precision: str | None = None,
) -> Operation[Prediction]:
    """`POST /v1/predict`: one batched call, read into arrays shaped by the frequencies asked for; `unit`
    and `precision` pick the predictor (None: the server's default, a CPU cluster at fp32)."""
    if (frequency_khz is None) == (frequencies_khz is None):
        raise LatfarmClientError("predict needs exactly one of frequency_khz or frequencies_khz")
    body: dict[str, Any] = {"device": device, "family": family, "configs": _config_dicts(configs)}
    body |= _drop_none({"unit": unit, "precision": precision})
    frequencies: list[int] | None
    if frequency_khz is not None:
        body["frequency_khz"] = int(frequency_khz)
        frequencies = None
    else:
        frequencies = [int(f) for f in frequencies_khz or ()]
        body["frequencies_khz"] = frequencies
    # Predicting changes nothing on the server, so it is safe to repeat.
    response: httpx.Response = yield Request("POST", "/v1/predict", json=body, idempotent=True)
    return _prediction(response.json(), len(configs), frequencies)


def snapshot_bytes(predictor_id: int) -> Operation[bytes]:
    """`GET /v1/predictors/{id}/snapshot`: the archive's bytes."""
    response: httpx.Response = yield Request("GET", f"/v1/predictors/{predictor_id}/snapshot")
    return response.content


def import_predictor(archive: bytes, device: int | None) -> Operation[Predictor]:
    """`POST /v1/predictors/import`: a snapshot archive as a new, inactive version."""
    params = _drop_none({"device": device})
    request = Request("POST", "/v1/predictors/import", params=params, content=archive, idempotent=False)
    return _model_of(request, Predictor)
