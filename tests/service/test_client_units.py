"""The client on accelerators: `predict(…, unit=, precision=)`, jobs with unit, precision, benchmark,
accelerator and per-layer profile, and a device's units — the same bodies from both facades.

The HTTP side is an `httpx.MockTransport` that records each request and answers as the v1 API does, so
what is checked is exactly what goes on the wire.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from service.client import AsyncLatfarmClient, Device, LatfarmClient, LatfarmClientError
from service.client import operations as op

CONFIGS = [{"scale": 2, "height": 32, "width": 32, "kernel": 3, "widths": w} for w in ([8, 8], [16, 16])]
GPU_KHZ = [315_000, 540_000, 840_000]
DEVICE = {
    "id": 3,
    "serial": "127.0.0.1:5555",
    "clusters": [{"name": "big", "cpus": [4, 5], "frequencies_khz": [1_000_000, 2_000_000]}],
    "accelerators": [
        {"name": "gpu", "model": "Adreno660v1", "frequencies_khz": GPU_KHZ, "precisions": ["fp32", "fp16"]}
    ],
    "units": [
        {"name": "big", "kind": "cpu", "frequencies_khz": [1_000_000, 2_000_000], "precisions": ["fp32"]},
        {"name": "gpu", "kind": "gpu", "frequencies_khz": GPU_KHZ, "precisions": ["fp32", "fp16"]},
    ],
}


class Recorder:
    """Answers `/v1/predict`, `/v1/jobs` and `/v1/devices/{id}` and keeps each request's JSON body."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.bodies.append((request.method, request.url.path, body))
        if request.url.path == "/v1/predict":
            n = len(body["configs"]) * len(body.get("frequencies_khz") or [body.get("frequency_khz")])
            rows = [
                {"latency_ms": 1.0 + i, "p10_ms": 0.9, "p90_ms": 1.1, "extrapolated": False} for i in range(n)
            ]
            return httpx.Response(200, json={"predictor_id": 7, "predictions": rows})
        if request.url.path == "/v1/jobs":
            return httpx.Response(202, json={"id": 11, "family": body["family"], "spec": body})
        if request.url.path == "/v1/devices/3":
            return httpx.Response(200, json=DEVICE)
        if request.url.path == "/v1/predictors":
            return httpx.Response(202, json={"id": 5, **body, "transfer": {"peers": [{"device_id": 4}]}})
        return httpx.Response(404, json={"title": "Not Found", "detail": request.url.path})


def _both(call: str, *args: Any, **kwargs: Any) -> tuple[Any, Any, list[Any], list[Any]]:
    """`call` through the blocking and the asyncio client; their results and the bodies each sent."""
    sync_rec, async_rec = Recorder(), Recorder()
    with LatfarmClient("http://farm.invalid", "t", transport=httpx.MockTransport(sync_rec)) as lf:
        blocking = getattr(lf, call)(*args, **kwargs)

    async def run() -> Any:
        async with AsyncLatfarmClient(
            "http://farm.invalid", "t", transport=httpx.MockTransport(async_rec)
        ) as alf:
            return await getattr(alf, call)(*args, **kwargs)

    twin = asyncio.run(run())
    return blocking, twin, sync_rec.bodies, async_rec.bodies


def test_predict_names_the_unit_and_precision() -> None:
    blocking, twin, sent, twin_sent = _both(
        "predict", 3, "sr_block", CONFIGS, frequencies_khz=GPU_KHZ, unit="gpu", precision="fp16"
    )
    assert sent == twin_sent
    [(method, path, body)] = sent
    assert (method, path) == ("POST", "/v1/predict")
    assert body["unit"] == "gpu" and body["precision"] == "fp16" and body["frequencies_khz"] == GPU_KHZ
    assert blocking.latency_ms.shape == twin.latency_ms.shape == (2, 3)
    # Without them the body is what it was: the server's default unit at fp32.
    _, _, plain, _ = _both("predict", 3, "sr_block", CONFIGS, frequency_khz=2_000_000)
    assert "unit" not in plain[0][2] and "precision" not in plain[0][2]


def test_a_training_may_ask_for_peers() -> None:
    predictor, twin, sent, twin_sent = _both("train_predictor", "sr_block", 3, transfer={"peers": "all"})
    assert sent == twin_sent
    [(method, path, body)] = sent
    assert (method, path) == ("POST", "/v1/predictors") and body["transfer"] == {"peers": "all"}
    assert predictor.transfer == twin.transfer == {"peers": [{"device_id": 4}]}
    # Without it the body is what it was.
    _, _, plain, _ = _both("train_predictor", "sr_block", 3)
    assert "transfer" not in plain[0][2]


def test_jobs_carry_unit_precision_benchmark_accelerator_and_layer_profile() -> None:
    job, twin, sent, twin_sent = _both(
        "submit_job",
        "sr_block",
        CONFIGS,
        devices=[3],
        frequencies="min-mid-max",
        runtime={"runs": 20, "warmup": 2},
        unit="gpu",
        precision="fp16",
        benchmark="tflite",
        accelerator="gpu",
        layer_profile=True,
    )
    assert sent == twin_sent and job.id == twin.id == 11
    runtime = sent[0][2]["runtime"]
    assert runtime == {
        "runs": 20,
        "warmup": 2,
        "unit": "gpu",
        "precision": "fp16",
        "benchmark": "tflite",
        "accelerator": "gpu",
        "layer_profile": True,
    }
    # Settings given only as keywords make the runtime on their own; none at all leaves it out.
    _, _, only, _ = _both("submit_job", "sr_block", CONFIGS, devices=[3], unit="npu", precision="int8")
    assert only[0][2]["runtime"] == {"unit": "npu", "precision": "int8"}
    _, _, bare, _ = _both("submit_job", "sr_block", CONFIGS, devices=[3])
    assert "runtime" not in bare[0][2]


def test_a_unit_given_twice_differently_is_refused_before_sending() -> None:
    recorder = Recorder()
    with LatfarmClient("http://farm.invalid", transport=httpx.MockTransport(recorder)) as lf:
        with pytest.raises(LatfarmClientError, match=r"runtime\['cluster'\] is 'big' but unit='gpu'"):
            lf.submit_job("sr_block", CONFIGS, devices=[3], runtime={"cluster": "big"}, unit="gpu")
        with pytest.raises(LatfarmClientError, match="precision"):
            lf.submit_job("sr_block", CONFIGS, devices=[3], runtime={"precision": "fp32"}, precision="fp16")
        # The same value twice is one setting; `cluster` becomes `unit`.
        lf.submit_job("sr_block", CONFIGS, devices=[3], runtime={"cluster": "gpu"}, unit="gpu")
    assert len(recorder.bodies) == 1 and recorder.bodies[0][2]["runtime"] == {"unit": "gpu"}
    assert op.UnitChoice().merged_into(None) is None


def test_a_device_lists_its_units_and_their_clocks() -> None:
    device, twin, _, _ = _both("get_device", 3)
    assert device == twin
    assert [u.name for u in device.units] == ["big", "gpu"] and device.accelerators[0].model == "Adreno660v1"
    assert device.unit("gpu").precisions == ["fp32", "fp16"]
    assert device.frequencies_khz("gpu") == GPU_KHZ and device.frequencies_khz() == [1_000_000, 2_000_000]
    with pytest.raises(LatfarmClientError, match=r"no unit 'npu' \(it has: big, gpu\)"):
        device.frequencies_khz("npu")
    # A server that lists no units yet: the CPU clusters are the units.
    older = Device.model_validate({k: v for k, v in DEVICE.items() if k not in ("units", "accelerators")})
    assert older.unit("big").frequencies_khz == [1_000_000, 2_000_000]
    with pytest.raises(LatfarmClientError, match="no unit 'gpu'"):
        older.unit("gpu")
