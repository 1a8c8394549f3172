"""`latfarm predict` and `latfarm jobs …` against the served app (both database engines)."""

# The client tests' fixtures are imported by name, so their parameters shadow the imports on purpose.
# ruff: noqa: F811

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import main
from service.client import LatfarmClient
from service.demo import ServerThread
from tests.service.test_client import (  # noqa: F401 - fixtures
    LITTLE,
    SR_CONFIGS,
    _measured_rows,
    admin_token,
    lf,
    probed_device,
    server,
)


def _cli(
    capsys: pytest.CaptureFixture[str], server: ServerThread, token: str, *argv: str
) -> tuple[int, str, str]:
    command, *rest = argv
    if command == "jobs":
        action, *rest = rest
        full = ["jobs", action, "--url", server.url, "--token", token, *rest]
    else:
        full = [command, "--url", server.url, "--token", token, *rest]
    status = main(full)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_jobs_submit_list_show_cancel_watch(
    capsys: pytest.CaptureFixture[str], server: ServerThread, admin_token: str, probed_device: int
) -> None:
    configs = [json.dumps(c) for c in SR_CONFIGS]
    status, out, _ = _cli(
        capsys, server, admin_token, "jobs", "submit", "--config", configs[0], "--config", configs[1],
        "--devices", str(probed_device), "--frequencies", f"{LITTLE[0]},{LITTLE[2]}", "--runs", "3",
    )  # fmt: skip
    assert status == 0
    job_id = int(out.split()[0])
    assert "queued" in out and "0/4" in out

    status, out, _ = _cli(capsys, server, admin_token, "jobs", "list")
    assert status == 0 and out.split()[0] == str(job_id)
    status, out, _ = _cli(capsys, server, admin_token, "jobs", "show", str(job_id))
    shown = json.loads(out)
    assert (shown["id"], shown["total_tasks"], shown["spec"]["runtime"]["runs"]) == (job_id, 4, 3)

    status, out, _ = _cli(capsys, server, admin_token, "jobs", "cancel", str(job_id))
    assert status == 0 and "cancelled" in out
    # Watching a finished job returns at once; not `done`, so the exit status says so.
    status, out, _ = _cli(capsys, server, admin_token, "jobs", "watch", str(job_id), "--poll", "0.01")
    assert status == 1 and "cancelled" in out and "4/4" in out

    status, out, _ = _cli(
        capsys, server, admin_token, "jobs", "submit", "--sample", "5", "--seed", "3",
        "--devices", str(probed_device),
    )  # fmt: skip
    assert status == 0 and "0/15" in out  # 5 sampled configs × min-mid-max


def test_jobs_errors_are_reported_plainly(
    capsys: pytest.CaptureFixture[str],
    server: ServerThread,
    admin_token: str,
    probed_device: int,
    tmp_path: Path,
) -> None:
    status, _, err = _cli(
        capsys,
        server,
        admin_token,
        "jobs",
        "submit",
        "--config",
        "{not json",
        "--devices",
        str(probed_device),
    )
    assert status == 2 and "--config #1 is not JSON" in err
    status, _, err = _cli(
        capsys, server, admin_token, "jobs", "submit", "--config", json.dumps(SR_CONFIGS[0]),
        "--devices", str(probed_device), "--frequencies", "123",
    )  # fmt: skip
    assert status == 1 and "422" in err and "123" in err
    status, _, err = _cli(capsys, server, admin_token, "jobs", "show", "999")
    assert status == 1 and "job 999" in err
    status, _, err = _cli(capsys, server, admin_token, "jobs", "watch", "999", "--max-wait", "1")
    assert status == 1 and "404" in err
    missing = tmp_path / "nope.json"
    status, _, err = _cli(
        capsys, server, admin_token, "jobs", "submit", "--configs-file", str(missing), "--devices", "1"
    )
    assert status == 2 and "cannot read" in err


def test_predict_table_and_json_lines(
    capsys: pytest.CaptureFixture[str],
    server: ServerThread,
    admin_token: str,
    lf: LatfarmClient,
    probed_device: int,
    tmp_path: Path,
) -> None:
    rows = _measured_rows(probed_device)
    lf.import_measurements(rows)
    predictor = lf.wait_predictor(
        lf.train_predictor("sr_block", probed_device).id, poll_s=0.05, timeout_s=120
    )
    lf.activate_predictor(predictor.id)
    configs = [rows[0]["config"], rows[30]["config"]]
    path = tmp_path / "configs.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in configs) + "\n")

    status, out, _ = _cli(
        capsys, server, admin_token, "predict", "--device", str(probed_device),
        "--frequency", f"{LITTLE[0]},{LITTLE[2]}", "--configs-file", str(path), "--json",
    )  # fmt: skip
    assert status == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["config"], line["frequency_khz"]) for line in lines] == [
        (configs[0], LITTLE[0]), (configs[0], LITTLE[2]), (configs[1], LITTLE[0]), (configs[1], LITTLE[2]),
    ]  # fmt: skip
    expected = lf.predict(probed_device, "sr_block", configs, frequencies_khz=[LITTLE[0], LITTLE[2]])
    assert [line["latency_ms"] for line in lines] == pytest.approx(expected.latency_ms.reshape(-1).tolist())
    assert {line["predictor_id"] for line in lines} == {predictor.id}

    status, out, _ = _cli(
        capsys, server, admin_token, "predict", "--device", str(probed_device), "--frequency", str(LITTLE[1]),
        "--config", json.dumps(configs[0]),
    )  # fmt: skip
    assert status == 0
    assert out.splitlines()[0] == f"predictor {predictor.id}"
    single = lf.predict(probed_device, "sr_block", configs[:1], frequency_khz=LITTLE[1]).latency_ms[0]
    assert len(out.splitlines()) == 3  # predictor line, header, one row
    assert f"{single:.2f}ms" in out.splitlines()[2]

    status, _, err = _cli(
        capsys,
        server,
        admin_token,
        "predict",
        "--device",
        str(probed_device),
        "--frequency",
        "x",
        "--config",
        "{}",
    )
    assert status == 2 and "--frequency" in err
