"""`latfarm jobs submit` and `latfarm predict` with a compute unit, precision, benchmark, accelerator and
per-layer profile: what goes on the wire (an `httpx.MockTransport` records it), and a job with the settings
the served app takes stored as asked."""

# The client tests' fixtures are imported by name, so their parameters shadow the imports on purpose.
# ruff: noqa: F811

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.cli import build_parser, main
from service.client import LatfarmClient
from service.client_cli import predict_from_args, submit_from_args
from service.demo import ServerThread
from tests.service.test_client import (  # noqa: F401 - fixtures
    LITTLE,
    SR_CONFIGS,
    admin_token,
    lf,
    probed_device,
    server,
)


def _recording_client(bodies: list[Any]) -> LatfarmClient:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if request.url.path == "/v1/predict":
            n = len(body["configs"]) * len(body["frequencies_khz"])
            rows = [{"latency_ms": 2.0, "p10_ms": 1.8, "p90_ms": 2.2, "extrapolated": False}] * n
            return httpx.Response(200, json={"predictor_id": 5, "predictions": rows})
        return httpx.Response(202, json={"id": 9, "family": body["family"], "total_tasks": 6})

    return LatfarmClient("http://farm.invalid", transport=httpx.MockTransport(answer))


def test_jobs_submit_sends_unit_precision_benchmark_accelerator_and_layers() -> None:
    args = build_parser().parse_args(
        ["jobs", "submit", "--config", json.dumps(SR_CONFIGS[0]), "--devices", "3",
         "--unit", "gpu", "--precision", "fp16", "--benchmark", "tflite", "--accelerator", "gpu", "--layers",
         "--frequencies", "min-mid-max", "--runs", "20"]
    )  # fmt: skip
    bodies: list[Any] = []
    with _recording_client(bodies) as client:
        job = submit_from_args(client, args)
    assert job.id == 9
    [body] = bodies
    assert body["frequencies"] == "min-mid-max" and body["devices"] == [3]
    assert body["runtime"] == {
        "runs": 20, "warmup": 2, "threads": 1, "passes": 1, "unit": "gpu", "precision": "fp16",
        "benchmark": "tflite", "accelerator": "gpu", "layer_profile": True,
    }  # fmt: skip
    # `--cluster` is the unit's older spelling; without `--layers` no profile is asked for.
    args = build_parser().parse_args(
        ["jobs", "submit", "--config", "{}", "--devices", "3", "--cluster", "big"]
    )
    with _recording_client(bodies) as client:
        submit_from_args(client, args)
    assert bodies[-1]["runtime"]["unit"] == "big" and "layer_profile" not in bodies[-1]["runtime"]


def test_jobs_submit_refuses_an_unknown_precision_or_accelerator(capsys: pytest.CaptureFixture[str]) -> None:
    for flag, value in (("--precision", "int4"), ("--accelerator", "cuda"), ("--benchmark", "tvm")):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["jobs", "submit", "--devices", "1", flag, value])
        assert exit_.value.code == 2
        assert f"argument {flag}: invalid choice: '{value}'" in capsys.readouterr().err


def test_predict_sends_unit_and_precision_and_prints_them() -> None:
    args = build_parser().parse_args(
        ["predict", "--device", "3", "--frequency", "315000,840000", "--unit", "gpu", "--precision", "fp16",
         "--config", json.dumps(SR_CONFIGS[0])]
    )  # fmt: skip
    bodies: list[Any] = []
    with _recording_client(bodies) as client:
        prediction = predict_from_args(client, args, [SR_CONFIGS[0]], [315_000, 840_000])
    assert bodies[0]["unit"] == "gpu" and bodies[0]["precision"] == "fp16"
    assert bodies[0]["frequencies_khz"] == [315_000, 840_000]
    assert prediction.latency_ms.shape == (1, 2)


def test_a_job_with_runtime_settings_is_stored_as_asked(
    capsys: pytest.CaptureFixture[str], server: ServerThread, admin_token: str, probed_device: int
) -> None:
    """Through the served app: precision, benchmark, accelerator and `--layers` on the CPU (every phone
    has one) reach the job's stored runtime."""
    status = main(
        ["jobs", "submit", "--url", server.url, "--token", admin_token, "--config", json.dumps(SR_CONFIGS[0]),
         "--devices", str(probed_device), "--frequencies", str(LITTLE[0]), "--runs", "3",
         "--precision", "fp32", "--benchmark", "onnxruntime", "--accelerator", "xnnpack", "--layers"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    job_id = int(out.split()[0])
    main(["jobs", "show", "--url", server.url, "--token", admin_token, str(job_id)])
    runtime = json.loads(capsys.readouterr().out)["spec"]["runtime"]
    assert (runtime["precision"], runtime["benchmark"], runtime["accelerator"], runtime["layer_profile"]) == (
        "fp32",
        "onnxruntime",
        "xnnpack",
        True,
    )
    main(["jobs", "cancel", "--url", server.url, "--token", admin_token, str(job_id)])
    capsys.readouterr()
