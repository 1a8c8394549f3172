"""The SR search's GPU variant (`--unit gpu --precision fp16`): it predicts with the phone's GPU predictor at
the GPU's clocks, profiles the winners on the GPU at fp16 and reads back only those measurements.

The script runs with a real `LatfarmClient` whose transport is an `httpx.MockTransport` answering as the v1
API does (device with its units, predict, jobs, measurements), so what is checked is what goes on the wire.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from examples.sr_search import GPU_FP16, Target, parse_args, search
from profilers.blocks import config_hash, get_family
from service.client import LatfarmClient

FAMILY = get_family("sr_block")
GPU_KHZ = [315_000, 540_000, 840_000]
CPU_KHZ = [1_000_000, 2_000_000]
#: The largest block takes ~3.6 ms on the stand-in's CPU, ~1.5 ms on its GPU at fp32, ~0.7 ms at fp16:
#: a 1 ms budget binds on the first two.
ARGS = ["--device", "1", "--budget-ms", "1", "--generations", "3", "--population", "8", "--top", "2",
        "--output-size", "64x64", "--max-depth", "3", "--runs", "4"]  # fmt: skip


class V1Api:
    """The API's answers for one phone with a big cluster and an Adreno GPU; fp16 at about half of fp32."""

    def __init__(self) -> None:
        self.predicts: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self.measurement_queries: list[dict[str, str]] = []

    @staticmethod
    def latency(config: dict[str, Any], khz: int, unit: str, precision: str) -> float:
        base = 0.05 + FAMILY.costs(config).flops / 2e7
        clock = (GPU_KHZ[-1] if unit == "gpu" else CPU_KHZ[-1]) / khz
        return base * clock * (0.5 if precision == "fp16" else 1.0) * (0.4 if unit == "gpu" else 1.0)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/devices/1":
            return httpx.Response(200, json={
                "id": 1, "serial": "127.0.0.1:5555",
                "clusters": [{"name": "big", "cpus": [4], "frequencies_khz": CPU_KHZ}],
                "units": [
                    {"name": "big", "kind": "cpu", "frequencies_khz": CPU_KHZ, "precisions": ["fp32"]},
                    {"name": "gpu", "kind": "gpu", "frequencies_khz": GPU_KHZ,
                     "precisions": ["fp32", "fp16"]},
                ],
            })  # fmt: skip
        if path == "/v1/predict":
            body = json.loads(request.content)
            self.predicts.append(body)
            unit, precision = body.get("unit", "big"), body.get("precision", "fp32")
            freqs = body.get("frequencies_khz") or [body["frequency_khz"]]
            rows = [
                {
                    "latency_ms": self.latency(c, f, unit, precision),
                    "p10_ms": 0,
                    "p90_ms": 0,
                    "extrapolated": False,
                }
                for c in body["configs"]
                for f in freqs
            ]
            return httpx.Response(200, json={"predictor_id": 4, "predictions": rows})
        if path == "/v1/jobs":
            body = json.loads(request.content)
            self.jobs.append(body)
            return httpx.Response(202, json={"id": len(self.jobs), "family": "sr_block", "status": "queued"})
        if path.startswith("/v1/jobs/"):
            return httpx.Response(200, json={"id": int(path.rsplit("/", 1)[1]), "status": "done"})
        if path == "/v1/measurements":
            query = dict(request.url.params)
            self.measurement_queries.append(query)
            unit, precision, khz = (
                query.get("unit", "big"),
                query.get("precision", "fp32"),
                int(query["frequency_khz"]),
            )
            items = [
                {"config_hash": config_hash("sr_block", c), "config": c, "cluster": unit,
                 "precision": precision, "frequency_khz": khz,
                 "median_ms": 1.1 * self.latency(c, khz, unit, precision)}
                for job in self.jobs
                if job["frequencies"] == [khz]
                and job["runtime"].get("unit", "big") == unit
                and job["runtime"].get("precision", "fp32") == precision
                for c in job["configs"]
            ]  # fmt: skip
            return httpx.Response(200, json={"items": items, "next_cursor": None})
        return httpx.Response(404, json={"title": "Not Found", "detail": path})


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, V1Api]:
    api = V1Api()
    with LatfarmClient("http://farm.invalid", "t", transport=httpx.MockTransport(api)) as client:
        status = search(client, parse_args(argv))
    return status, capsys.readouterr().out, api


def test_gpu_variant_predicts_profiles_and_reads_back_on_the_gpu_at_fp16(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, api = _run([*ARGS, "--unit", "gpu", "--precision", "fp16"], capsys)
    assert status == 0, out
    assert len(api.predicts) == 3  # one batched call per generation
    for body in api.predicts:
        assert (body["unit"], body["precision"], body["frequency_khz"]) == ("gpu", "fp16", GPU_KHZ[-1])
    [job] = api.jobs  # the two winners, one job at the GPU's top clock
    assert job["frequencies"] == [GPU_KHZ[-1]] and len(job["configs"]) == 2
    assert job["runtime"] == {"runs": 4, "warmup": 1, "unit": "gpu", "precision": "fp16"}
    assert [(q["unit"], q["precision"]) for q in api.measurement_queries] == [("gpu", "fp16")]
    lines = out.splitlines()
    assert "blocks predicted on gpu fp16" in lines[0] and lines[1] == "on gpu fp16"
    rows = [line for line in lines if line.startswith("widths=")]
    assert len(rows) == 2
    for row in rows:
        assert "(none)" not in row and "-9.1%" in row  # predicted beside the measured (1.1×) GPU number


def test_gpu_variant_affords_more_than_the_cpu_and_fp16_more_than_fp32(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under the same budget a faster unit fits a bigger block: the search follows the predictor it asks."""
    best = {}
    for target in (Target(), Target("gpu", "fp32"), GPU_FP16):
        flags = (
            [f for f in ("--unit", target.unit, "--precision", target.precision) if f] if target.unit else []
        )
        more = ["--generations", "6", "--population", "12", "--top", "1"]
        status, out, api = _run([*ARGS, *more, *flags], capsys)
        assert status == 0, out
        [job] = api.jobs
        best[target.label] = FAMILY.costs(job["configs"][0]).params
        if target.unit is None:
            assert all("unit" not in body for body in api.predicts)  # the CPU search is what it was
            assert job["frequencies"] == [CPU_KHZ[-1]]
    assert best["cpu"] <= best["gpu fp32"] <= best["gpu fp16"] and best["cpu"] < best["gpu fp16"]


def test_gpu_variant_per_clock_and_a_phone_without_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, api = _run([*ARGS, "--unit", "gpu", "--precision", "fp16", "--dvfs"], capsys)
    assert status == 0, out
    assert all(body["frequencies_khz"] == GPU_KHZ for body in api.predicts)
    assert sorted(f for job in api.jobs for f in job["frequencies"]) == sorted(
        {f for job in api.jobs for f in job["frequencies"]}
    ) and {f for job in api.jobs for f in job["frequencies"]} <= set(GPU_KHZ)
    from service.client import LatfarmClientError

    with pytest.raises(LatfarmClientError, match="no unit 'npu'"):
        _run([*ARGS, "--unit", "npu", "--precision", "int8"], capsys)
